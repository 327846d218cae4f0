"""CPU threads shared fairly between the aevb processes of one machine.

torch gives every process as many intra-op threads as there are cores. Two such processes on
one machine put twice as many busy threads on the cores as there are cores; OpenMP's threads
spin while they wait for one another at the end of every parallel region, so each process
loses far more than half its speed (a k=5000 evaluation ran 9x slower beside an M2 experiment,
a training epoch 3-6x slower beside an evaluation; issue 21).

A :class:`ThreadBudget` registers its process in a folder shared by the user's aevb processes
(a file named by the pid, touched at most once a second while the process computes) and, in
a background thread, counts every ``interval`` seconds the live ones that computed in the last
``idle`` seconds: a notebook kernel that trained once and now waits takes no share. Its share
is ``threads // processes`` (at least 1), where ``threads`` is what the process had when the
budget started (torch's default, or what the user set with
``torch.set_num_threads``): a budget never gives more. The compute thread
adopts a new share at its next :func:`apply` (once per training step or evaluation batch):
``torch.set_num_threads`` acts on the calling thread's OpenMP team, so only the thread that
computes may call it. When the other process ends, the share grows back.

A process whose threads the user fixed (``OMP_NUM_THREADS``, or ``torch.set_num_threads``
before aevb starts computing) keeps them, and registers them as taken (``fixed``): the others
share the cores that are left, ``(threads - fixed) // processes``. A script that runs one
thread per job beside a budgeted one no longer leaves it believing it has every core (a
two-layer VAE ran 4.3x slower at two threads beside a one-thread M1+M2 job on two cores,
``docs/performance.md``). Nothing registers with ``AEVB_THREAD_BUDGET=0`` or on a machine
with one core. The thread count can change the last bits of a CPU result (the order of a
product's partial sums): a run that must resume bit for bit beside other work fixes it with
``OMP_NUM_THREADS``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from pathlib import Path

import torch


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _started(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), or "" where unknown: with
    the pid it names a process, whose pid may later be reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, after the parenthesized name


def _alive(pid: int, started: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user holds the pid: not the one registered
        return False
    return not started or _started(pid) == started


def default_folder() -> Path:
    """Where the user's aevb processes register: the temporary folder, one per user."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"aevb-{uid}" / "processes"


class ThreadBudget:
    """This process's fair share of the CPU threads (see the module's docstring).

    :param int cores: the threads to share (default: the process's threads now).
    :param Path folder: where processes register (default :func:`default_folder`).
    :param float interval: seconds between counts of the live processes.
    :param float idle: a process that has not computed for this long is not counted.
    :param bool fixed: this process keeps its threads (the user's choice) and registers them as
        taken from the others' cores, instead of taking a share.
    """

    def __init__(self, cores: int | None = None, folder: Path | None = None,
                 interval: float = 1.0, idle: float = 10.0, fixed: bool = False):
        self.cores = cores or torch.get_num_threads()
        self.fixed = fixed
        self.folder = folder or default_folder()
        self.interval, self.idle = interval, idle
        self._beat = 0.0
        self.share = torch.get_num_threads()
        self._applied = self.share
        self._file: Path | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def wanted() -> bool:
        """Whether budgeting applies: the user has not fixed the threads, and there is more
        than one core."""
        if os.environ.get("AEVB_THREAD_BUDGET", "1") == "0":
            return False
        if os.environ.get("OMP_NUM_THREADS"):
            return False
        return _cores() > 1 and torch.get_num_threads() > 1

    @staticmethod
    def registers_fixed() -> bool:
        """Whether a process that is not :meth:`wanted` registers its fixed threads: budgeting
        is not switched off, and there is more than one core."""
        return os.environ.get("AEVB_THREAD_BUDGET", "1") != "0" and _cores() > 1

    def census(self) -> tuple[int, int]:
        """The live registered processes that share (this one included) and the threads that
        the others fixed; stale files are removed."""
        sharing, fixed = 0, 0
        for entry in self.folder.glob("*"):
            try:
                pid = int(entry.name)
            except ValueError:
                continue
            try:
                started, *taken = entry.read_text().split("\n")
            except OSError:
                continue
            if pid == os.getpid():
                sharing += not self.fixed
            elif _alive(pid, started.strip()):
                with contextlib.suppress(FileNotFoundError):
                    if time.time() - entry.stat().st_mtime < self.idle:
                        threads = taken[0].strip() if taken else ""
                        if threads.isdigit():
                            fixed += int(threads)
                        else:
                            sharing += 1
            else:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
        return max(sharing, 1), fixed

    def processes(self) -> int:
        """The live registered processes that share the cores (this one included)."""
        return self.census()[0]

    def count(self) -> int:
        """Recount the processes and set :attr:`share`; returns it."""
        sharing, fixed = self.census()
        self.share = max(1, (self.cores - fixed) // sharing)
        return self.share

    def start(self) -> ThreadBudget:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._file = self.folder / str(os.getpid())
        taken = f"\n{torch.get_num_threads()}" if self.fixed else ""
        self._file.write_text(_started(os.getpid()) + taken)
        if self.fixed:  # it says it computes; it never recounts nor changes its threads
            return self
        self.count()
        self.apply()
        self._thread = threading.Thread(target=self._watch, name="aevb-thread-budget",
                                        daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(OSError):
                self.count()

    def apply(self) -> int:
        """Adopt the current share in the calling (compute) thread, and say (at most once a
        second) that this process computes; returns the threads."""
        now = time.monotonic()
        if now - self._beat > 1.0 and self._file is not None:
            self._beat = now
            with contextlib.suppress(OSError):
                os.utime(self._file)
        share = self.share
        if not self.fixed and share != self._applied:
            torch.set_num_threads(share)
            self._applied = share
        return share

    def stop(self) -> None:
        self._stop.set()
        if self._file is not None:
            with contextlib.suppress(FileNotFoundError):
                self._file.unlink()
            self._file = None


_BUDGET: ThreadBudget | None = None


def share_threads() -> None:
    """Start this process's :class:`ThreadBudget` once: a share where
    :meth:`ThreadBudget.wanted`, else (:meth:`ThreadBudget.registers_fixed`) the registration
    of the threads the user fixed. The trainer and the evaluation call it when they begin."""
    global _BUDGET
    if _BUDGET is not None:
        return
    if ThreadBudget.wanted():
        _BUDGET = ThreadBudget().start()
    elif ThreadBudget.registers_fixed():
        _BUDGET = ThreadBudget(fixed=True).start()
    else:
        return
    import atexit

    atexit.register(_BUDGET.stop)


def apply_share() -> None:
    """Adopt the process's current share, if it has a budget (once per step or batch)."""
    if _BUDGET is not None:
        _BUDGET.apply()


def stop_sharing() -> None:
    """Leave the budget (a process that hands its work to workers, which share instead)."""
    global _BUDGET
    if _BUDGET is not None:
        _BUDGET.stop()
        _BUDGET = None
