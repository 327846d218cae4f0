"""Checkpoints: written atomically (temporary file, fsync, rename), read with
``torch.load(weights_only=True)``, and checked before anything is restored."""

from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from aevb.inference.errors import CheckpointError

FORMAT = "aevb-checkpoint/1"
CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"epoch-(\d+)\.pt$")
TMP_SUFFIX = ".tmp"


def atomic_write_bytes(path: Path, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it over ``path``:
    a crash leaves either the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 -> what open() would have made
        with os.fdopen(fd, "wb") as f:
            try:
                write(f)
            except RuntimeError as exc:  # torch.save reports a failed write (ENOSPC) this way
                if isinstance(exc.__context__, OSError):
                    raise exc.__context__ from None
                raise
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a temporary file renamed over it): a reader never sees half a
    file."""
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files that writes interrupted by a kill left in ``folder`` and its
    checkpoint folder (``.NAME.XXXX.tmp``); call it only while holding the folder's lock.
    Returns what was removed."""
    removed = []
    for sub in (Path(folder), Path(folder) / CHECKPOINT_DIR):
        if sub.is_dir():
            for p in sub.iterdir():
                if p.name.startswith(".") and p.name.endswith(TMP_SUFFIX) and p.is_file():
                    p.unlink()
                    removed.append(p)
    return removed


def rng_state() -> dict[str, Any]:
    """The random states a checkpoint holds: torch's (and CUDA's) and Python's."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the random states of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, list | tuple) else x


def save_checkpoint(run_dir: Path, epoch: int, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, config: dict, keep: int = 2,
                    extra: dict | None = None) -> Path:
    """Write ``checkpoints/epoch-NNNN.pt`` atomically and keep the newest ``keep`` of them.
    ``extra`` holds further run state (plain data and tensors)."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    path = folder / f"epoch-{epoch:04d}.pt"
    payload = {"format": FORMAT, "epoch": epoch, "model": model.state_dict(),
               "optimizer": optimizer.state_dict(), "rng": rng_state(), "config": config,
               "extra": extra or {}}
    atomic_write_bytes(path, lambda f: torch.save(payload, f))
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink()
    return path


def checkpoint_epoch(path: Path) -> int:
    """The epoch in a checkpoint's file name (``epoch-NNNN.pt``)."""
    match = _NAME.search(Path(path).name)
    if match is None:
        raise CheckpointError(f"{path} is not named like an aevb checkpoint (epoch-NNNN.pt)")
    return int(match.group(1))


def list_checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoints, oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if _NAME.search(p.name)), key=checkpoint_epoch)


def latest_checkpoint(run_dir: Path) -> Path:
    """The newest checkpoint of a run folder (by epoch)."""
    found = list_checkpoints(run_dir)
    if not found:
        raise CheckpointError(f"no checkpoint in {Path(run_dir) / CHECKPOINT_DIR}; "
                              f"is {run_dir} a run folder written by `aevb train`?")
    return found[-1]


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint; a corrupt or foreign file raises :class:`CheckpointError`
    and leaves every file as it was."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        older = [p for p in list_checkpoints(path.parent.parent) if p != path]
        hint = (f"resume from an older one with --checkpoint {older[-1]}" if older else
                "no older checkpoint exists; start a new run")
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); nothing was changed — {hint}"
        ) from None
    missing = {"format", "epoch", "model", "optimizer", "rng", "config"} - set(payload)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or missing:
        raise CheckpointError(f"{path} is not an aevb checkpoint (format {FORMAT!r}); "
                              f"missing {sorted(missing)}")
    return payload


def restore(payload: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer
            ) -> int:
    """Load a checkpoint's model, optimizer and RNG states; returns the epoch it ended."""
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    set_rng_state(payload["rng"])
    return int(payload["epoch"])
