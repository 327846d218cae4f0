"""Estimators of the variational objective, chosen by name with one flag (``elbo=NAME``).

=============  ==========================================================================
``elbo``       :class:`~pyro.infer.Trace_ELBO`: SGVB estimator A (Kingma & Welling 2014,
               eq. 6), reparameterized, KL sampled.
``meanfield``  :class:`~pyro.infer.TraceMeanField_ELBO`: SGVB estimator B (eq. 7), KL analytic.
``iwae``       :class:`~inference.importance.ImportanceWeightedELBO`: the k-sample bound of
               Burda et al. (2016) per datapoint; ``num_particles`` is k.
``score``      :class:`~pyro.infer.TraceGraph_ELBO` on a guide whose latents are made
               non-reparameterizable: the score-function (REINFORCE) gradient (Williams 1992;
               the estimator the paper compares against, section 2.4 and Figure 2).
=============  ==========================================================================

Each objective exposes ``differentiable_loss(model, guide, batch)``; the trainer calls
``backward`` on it and steps a torch optimizer (Pyro's ``ELBOModule`` pattern).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from pyro.distributions import TorchDistribution
from pyro.infer import ELBO, Trace_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample

from models.registry import Registry

from .importance import ImportanceWeightedELBO


class NonReparameterized(TorchDistribution):
    """Wraps a distribution so that it samples without ``rsample``.

    Unlike flagging an instance with ``has_rsample_(False)``, the wrapper survives the
    ``expand`` that plates apply when they broadcast a site, so the flag cannot be lost.
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, base_dist):
        self.base_dist = base_dist
        super().__init__(base_dist.batch_shape, base_dist.event_shape, validate_args=False)

    @property
    def support(self):
        return self.base_dist.support

    def expand(self, batch_shape, _instance=None):
        return NonReparameterized(self.base_dist.expand(batch_shape))

    def sample(self, sample_shape=()):
        return self.base_dist.sample(sample_shape)

    def log_prob(self, value):
        return self.base_dist.log_prob(value)

    @property
    def mean(self):
        return self.base_dist.mean

    @property
    def variance(self):
        return self.base_dist.variance


class ScoreFunction(Messenger):
    """Makes every latent sample site non-reparameterizable, so that estimators use the
    score-function gradient :math:`f(z)\\nabla_\\phi \\log q_\\phi(z)` for it."""

    def _pyro_sample(self, msg):
        if not msg["is_observed"] and not isinstance(msg["fn"], _Subsample):
            msg["fn"] = NonReparameterized(msg["fn"])


class ScoreFunctionELBO(TraceGraph_ELBO):
    """:class:`~pyro.infer.TraceGraph_ELBO` with a ``differentiable_loss``.

    Its value is the ELBO estimate; its gradient is that of TraceGraph_ELBO's surrogate loss
    (score-function terms with downstream-cost Rao-Blackwellization, Schulman et al. 2015), the
    gradient ``TraceGraph_ELBO.loss_and_grads`` would produce (aevb's tests check they agree).
    """

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        elbo, surrogate_loss = self._loss_and_surrogate_loss(model, guide, args, kwargs)
        return -elbo.detach() + (surrogate_loss - surrogate_loss.detach())


@dataclass
class Objective:
    """A named estimator plus how it treats the guide.

    :param str name: registry name.
    :param ELBO elbo: the Pyro objective.
    :param bool score_function: if True the guide's latents are sampled without rsample.
    """

    name: str
    elbo: ELBO
    score_function: bool = False

    @property
    def num_particles(self) -> int:
        return self.elbo.num_particles

    def wrap_guide(self, guide: Callable) -> Callable:
        return ScoreFunction()(guide) if self.score_function else guide

    def differentiable_loss(self, model: Callable, guide: Callable, *args, **kwargs):
        return self.elbo.differentiable_loss(model, self.wrap_guide(guide), *args, **kwargs)


OBJECTIVES: Registry[Callable[[int], Objective]] = Registry("objective")


@OBJECTIVES.register("elbo")
def _elbo(num_particles: int) -> Objective:
    return Objective("elbo", Trace_ELBO(num_particles=num_particles, vectorize_particles=True))


@OBJECTIVES.register("meanfield")
def _meanfield(num_particles: int) -> Objective:
    return Objective(
        "meanfield", TraceMeanField_ELBO(num_particles=num_particles, vectorize_particles=True))


@OBJECTIVES.register("iwae")
def _iwae(num_particles: int) -> Objective:
    return Objective("iwae", ImportanceWeightedELBO(num_particles=num_particles))


@OBJECTIVES.register("score")
def _score(num_particles: int) -> Objective:
    elbo = ScoreFunctionELBO(num_particles=num_particles, vectorize_particles=True)
    return Objective("score", elbo, score_function=True)


def build_objective(name: str, num_particles: int = 1) -> Objective:
    """The objective registered as ``name`` with ``num_particles`` samples (L, or k for iwae).

    :raises UnknownNameError: for an unknown name; the message lists the valid ones.
    """
    if num_particles < 1:
        raise ValueError(f"num_particles must be >= 1, got {num_particles}")
    return OBJECTIVES.get(name)(num_particles)
