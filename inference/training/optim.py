"""Optimizers by name: Adam (Kingma & Ba 2015) and Adagrad (Duchi et al. 2011; the AEVB
paper's choice, section 5)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from aevb.models.registry import Registry

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer")
OPTIMIZERS.register("adam")(torch.optim.Adam)
OPTIMIZERS.register("adagrad")(torch.optim.Adagrad)


def build_optimizer(name: str, params: Iterable[torch.nn.Parameter], lr: float,
                    weight_decay: float = 0.0, foreach: bool | None = None,
                    **options) -> torch.optim.Optimizer:
    """``foreach=True`` updates all parameters with multi-tensor kernels (one call per step
    instead of one per parameter); ``None`` leaves torch's default (foreach on CUDA only).
    ``options``: the optimizer's own settings (``eps``, ``betas``: see
    :meth:`aevb.config.OptimConfig.options`; ``capturable=True`` for CUDA graphs)."""
    return OPTIMIZERS.get(name)(params, lr=lr, weight_decay=weight_decay, foreach=foreach,
                                **options)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every parameter group's learning rate (what the checkpointed state then records)."""
    set_hyperparameters(optimizer, lr=lr)


def set_hyperparameters(optimizer: torch.optim.Optimizer, **values) -> None:
    """Every parameter group's ``lr``, ``weight_decay``, ``eps`` ... (a value of ``None`` is
    left as it is): a resumed run's settings reach the optimizer that a checkpoint restored."""
    for group in optimizer.param_groups:
        for key, value in values.items():
            if value is not None and key in group:
                group[key] = value
