r"""Learning-rate schedules by epoch (one epoch = one pass over the training data).

=============  =============================================================================
``constant``   the configured rate throughout
``burda``      Burda et al. (2016, section 5): :math:`\mathrm{lr}\cdot 10^{-i/7}` for
               :math:`3^i` passes, i = 0..7 (3280 passes in all), then the last rate
=============  =============================================================================
"""

from __future__ import annotations

from collections.abc import Callable

from aevb.models.registry import Registry

SCHEDULES: Registry[Callable[[float], Callable[[int], float]]] = Registry("schedule")


@SCHEDULES.register("constant")
def constant(lr: float) -> Callable[[int], float]:
    """The same learning rate every epoch."""
    return lambda epoch: lr


def burda_stage(epoch: int) -> int:
    """The stage i of ``epoch`` (1-based) in Burda et al.'s schedule: the first 3^0 passes are
    stage 0, the next 3^1 stage 1, ... up to stage 7."""
    end, stage = 0, 0
    while True:
        end += 3 ** stage
        if epoch <= end or stage == 7:
            return stage
        stage += 1


def burda_passes(last_stage: int = 7) -> int:
    """Passes in stages 0..``last_stage`` (3280 for all eight)."""
    return sum(3 ** i for i in range(last_stage + 1))


@SCHEDULES.register("burda")
def burda(lr: float) -> Callable[[int], float]:
    """Burda et al. (2016)'s schedule: lr·10^(−i/7) for 3^i passes, i = 0..7."""
    return lambda epoch: lr * 10 ** (-burda_stage(epoch) / 7)
