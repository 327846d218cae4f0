"""One writer per run folder: ``RUN/.aevb.lock`` holds the writer's pid, host and start time.

:func:`claim` is what ``aevb train`` (and :func:`aevb.fit`) hold while they write a run
folder. A second writer is refused with a message naming the holder; a lock left by a process
that is gone (killed with ``-9``, a power cut) is detected on the same host (the pid is dead, or
is now another process: its start time differs) and taken over. The claim also removes the
temporary files of writes that a kill interrupted, and, when the run is refused before anything
was written, the folder it made.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from aevb.inference.errors import RunDirError
from aevb.inference.training.checkpoint import remove_temporaries

LOCK_NAME = ".aevb.lock"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat``, field 22), which
    tells a live holder from a new process that reuses its pid; ``None`` where there is no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _holder() -> dict:
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "started": _start_time(pid),
            "since": time.strftime("%Y-%m-%d %H:%M:%S")}


def _alive(holder: dict) -> bool:
    """Whether the process that wrote ``holder`` still runs (on this host; a lock from another
    host is taken as alive: it cannot be checked from here)."""
    if holder.get("host") != socket.gethostname():
        return True
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    started = holder.get("started")
    return started is None or _start_time(pid) in (None, started)


def _read(path: Path) -> dict:
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # half-written or garbage: its writer died while writing it
    return holder if isinstance(holder, dict) else {}


def _write_exclusive(path: Path, holder: dict) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(holder, f)
    return True


def acquire(run_dir: Path) -> Path:
    """Take ``run_dir``'s lock (the folder exists) or raise :class:`RunDirError` naming the
    process that holds it."""
    path = Path(run_dir) / LOCK_NAME
    me = _holder()
    for _ in range(3):
        if _write_exclusive(path, me):
            return path
        held = _read(path)
        if held and _alive(held):
            raise RunDirError(
                f"run folder {run_dir} is in use by process {held.get('pid')} on "
                f"{held.get('host')} (since {held.get('since')}); wait for it to finish, or, if "
                f"that process is gone, delete {path}")
        with contextlib.suppress(FileNotFoundError):  # stale: its writer is dead
            path.unlink()
    raise RunDirError(f"could not take the lock {path}: other processes keep taking it")


def release(path: Path) -> None:
    """Remove the lock if it is still this process's."""
    if _read(path).get("pid") == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _make(run_dir: Path) -> bool:
    """Create ``run_dir`` (and its parents); whether it was created now."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"run folder {run_dir} is a file; give a folder with --run-dir")
    if run_dir.is_dir():
        return False
    try:
        run_dir.mkdir(parents=True)
    except FileExistsError:  # made by a writer that raced us; the lock decides
        return False
    except OSError as exc:
        raise RunDirError(f"cannot create run folder {run_dir}: {exc.strerror}; choose "
                          f"another --run-dir") from None
    return True


def contents(run_dir: Path) -> list[Path]:
    """What the folder holds besides its lock."""
    return [p for p in Path(run_dir).iterdir() if p.name != LOCK_NAME]


@contextlib.contextmanager
def claim(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir`` as its one writer: make it, lock it, clean temporaries of interrupted
    writes; on the way out release the lock, and remove the folder if it was made here and
    nothing was written into it (a run refused by a check leaves nothing behind)."""
    run_dir = Path(run_dir)
    made = _make(run_dir)
    try:
        lock = acquire(run_dir)
    except PermissionError as exc:
        raise RunDirError(f"cannot write in run folder {run_dir}: {exc.strerror}") from None
    except OSError as exc:
        raise RunDirError(f"cannot write in run folder {run_dir}: {exc.strerror}; choose "
                          f"another --run-dir") from None
    try:
        remove_temporaries(run_dir)
        yield
    finally:
        release(lock)
        if made and not any(run_dir.iterdir()):
            run_dir.rmdir()
