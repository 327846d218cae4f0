"""Training: the SVI loop over objects (:mod:`.loop`), its step engines (:mod:`.engines`),
optimizers, data-parallel ranks, checkpoints and per-epoch metrics."""

from .checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from .engines import ENGINES, Engine, build_engine
from .loop import (
    LoopOptions,
    check_data,
    check_memory,
    check_scaling,
    prepare_objective,
    resolve_device,
    run_epochs,
    train_epoch,
)
from .metrics import MetricsLog
from .optim import OPTIMIZERS, build_optimizer

__all__ = [
    "ENGINES", "OPTIMIZERS", "Engine", "LoopOptions", "MetricsLog", "build_engine",
    "build_optimizer", "check_data", "check_memory", "check_scaling", "latest_checkpoint", "list_checkpoints",
    "load_checkpoint", "prepare_objective", "resolve_device", "run_epochs", "save_checkpoint",
    "train_epoch",
]
