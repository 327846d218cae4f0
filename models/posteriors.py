r"""Richer amortized posteriors q(z|x) for Gaussian latents (``model.posterior`` of the VAE).

Each is a :class:`~aevb.models.families.Family` in :data:`~aevb.models.families.FAMILIES`: the encoder emits
its parameters (``param_shape``) and the family turns them into a distribution over a vector
latent of ``shape = (D,)``. ``size`` is the family's one size: the rank, the number of mixture
components or the number of flow steps.

============  =======================================================================================
``diag``      :math:`\mathcal N(\mu, \operatorname{diag}\sigma^2)` (Kingma & Welling 2014; in
              :mod:`aevb.models.families`).
``lowrank``   :math:`\mathcal N(\mu, WW^\top + \operatorname{diag} d)`, W of rank r = ``size`` (r = 1
              is Rezende et al. 2014's covariance, section 4.1).
``full``      :math:`\mathcal N(\mu, LL^\top)`, L lower-triangular with a positive diagonal
              (Cholesky).
``mixture``   K = ``size`` diagonal Gaussians with learned weights, Pyro's
              :class:`~pyro.distributions.MixtureOfDiagNormals` (pathwise gradients, Jankowiak &
              Karaletsos 2018). No analytic KL: ``meanfield`` refuses it.
``planar``    K = ``size`` conditional planar flows :math:`f(z) = z + u\,h(w^\top z + b)` on a
              diagonal base (Rezende & Mohamed 2015, eq. 10-12), u, w, b computed from an
              x-dependent context the encoder emits. No analytic KL.
``iaf``       K = ``size`` conditional inverse autoregressive flow steps
              :math:`z \mapsto \mu_t(z, h) + \sigma_t(z, h) \odot z` (Kingma et al. 2016, eq. 10-11)
              with MADE networks taking the context h. No analytic KL.
============  =======================================================================================

The flows are Pyro's conditional transforms (:func:`pyro.distributions.transforms.conditional_planar`,
:func:`~pyro.distributions.transforms.conditional_affine_autoregressive`); their networks form
the family's :attr:`module`, which the model registers so that they train with the encoder.

Importing this module also registers the analytic KL of a full or low-rank Gaussian from a
diagonal one (``Independent(Normal)``, the VAE's prior), which torch.distributions lacks, by
rewriting the diagonal Gaussian as a ``MultivariateNormal``.
"""

from __future__ import annotations

import math

import torch
from pyro import distributions as dist
from pyro.distributions import transforms as T
from torch import nn
from torch.distributions import Independent, Normal, kl_divergence, register_kl
from torch.distributions import LowRankMultivariateNormal as TorchLowRank
from torch.distributions import MultivariateNormal as TorchMVN

from . import kernels
from .families import FAMILIES, DiagonalNormal, Family


def _positive(raw: torch.Tensor, floor: float) -> torch.Tensor:
    return kernels.softplus(raw) + floor


class VectorPosterior(Family):
    """A posterior over a vector latent ``shape = (D,)`` with a ``size`` (see the module doc)."""

    value_type = "normal"
    default_size = 1
    min_scale = 1e-5

    def __init__(self, shape, num_classes=None, size: int | None = None):
        super().__init__(shape, num_classes)
        if len(self.shape) != 1:
            raise ValueError(f"{type(self).__name__} is a posterior over vectors; got a latent "
                             f"of shape {self.shape}")
        self.dim = self.shape[0]
        self.size = self.default_size if size is None else int(size)
        if self.size < 1:
            raise ValueError(f"posterior size must be >= 1, got {self.size}")
        self.module: nn.Module | None = None


@FAMILIES.register("lowrank")
class LowRankNormal(VectorPosterior):
    """Rank-r plus diagonal covariance; parameters ``[mu (D), raw d (D), W (D*r)]``."""

    @property
    def param_shape(self):
        return ((2 + self.size) * self.dim,)

    def __call__(self, params):
        d, r = self.dim, self.size
        loc, raw, factor = params.split([d, d, d * r], dim=-1)
        return dist.LowRankMultivariateNormal(loc, factor.unflatten(-1, (d, r)),
                                              _positive(raw, self.min_scale) ** 2)

    def mean(self, params):
        return params[..., :self.dim]


@FAMILIES.register("full")
class FullNormal(VectorPosterior):
    """Full covariance through its Cholesky factor L; parameters ``[mu (D), raw diag(L) (D),
    strictly-lower entries of L (D(D-1)/2)]``."""

    @property
    def param_shape(self):
        return (2 * self.dim + self.dim * (self.dim - 1) // 2,)

    def scale_tril(self, params):
        d = self.dim
        raw, lower = params[..., d:2 * d], params[..., 2 * d:]
        rows, cols = torch.tril_indices(d, d, offset=-1, device=params.device)
        tril = params.new_zeros(*params.shape[:-1], d, d)
        # fan-in scaling: row i of L sums i off-diagonal outputs, so without it the initial
        # posterior variances grow with i (to ~10x the diagonal's at D = 50)
        tril[..., rows, cols] = lower / math.sqrt(d)
        return tril + torch.diag_embed(_positive(raw, self.min_scale))

    def __call__(self, params):
        return dist.MultivariateNormal(params[..., :self.dim], scale_tril=self.scale_tril(params))

    def mean(self, params):
        return params[..., :self.dim]


@FAMILIES.register("mixture")
class DiagNormalMixture(VectorPosterior):
    """K diagonal Gaussians and their logits; parameters ``[locs (K*D), raw scales (K*D),
    logits (K)]``."""

    default_size = 5

    @property
    def param_shape(self):
        return ((2 * self.dim + 1) * self.size,)

    def split(self, params):
        k, d = self.size, self.dim
        locs, raw, logits = params.split([k * d, k * d, k], dim=-1)
        return (locs.unflatten(-1, (k, d)), _positive(raw, self.min_scale).unflatten(-1, (k, d)),
                logits)

    def __call__(self, params):
        if self.dim < 2:
            raise ValueError("posterior=mixture needs a latent of 2 or more dimensions")
        return dist.MixtureOfDiagNormals(*self.split(params))

    def mean(self, params):
        locs, _, logits = self.split(params)
        return (logits.softmax(-1).unsqueeze(-1) * locs).sum(-2)


class FlowPosterior(VectorPosterior):
    """A diagonal Gaussian base q0(z0|x) pushed through ``size`` conditional transforms whose
    parameters depend on a context vector h(x) of D features; parameters ``[mu, raw sigma, h]``.
    """

    default_size = 4

    def __init__(self, shape, num_classes=None, size=None):
        super().__init__(shape, num_classes, size)
        self.base = DiagonalNormal(self.shape, min_scale=self.min_scale)
        self.module = nn.ModuleList(self.transform(self.dim) for _ in range(self.size))

    def transform(self, dim: int) -> T.ConditionalTransformModule:
        raise NotImplementedError

    @property
    def param_shape(self):
        return (3 * self.dim,)

    def __call__(self, params):
        base = self.base(params[..., :2 * self.dim])
        assert self.module is not None
        return dist.ConditionalTransformedDistribution(base, list(self.module)).condition(
            params[..., 2 * self.dim:])

    def mean(self, params):
        """The base mean pushed through the flow (a point summary; the flow's mean has no
        closed form)."""
        z = self.base.mean(params[..., :2 * self.dim])
        context = params[..., 2 * self.dim:]
        assert self.module is not None
        for step in self.module:
            z = step.condition(context)(z)
        return z


@FAMILIES.register("planar")
class PlanarFlowPosterior(FlowPosterior):
    """q(z|x) as K conditional planar flows on a diagonal Gaussian (Rezende & Mohamed 2015)."""
    default_size = 8

    def transform(self, dim):
        return T.conditional_planar(dim, dim, hidden_dims=[2 * dim])


@FAMILIES.register("iaf")
class IAFPosterior(FlowPosterior):
    """q(z|x) as K conditional inverse autoregressive flow steps on a diagonal Gaussian
    (Kingma et al. 2016)."""
    default_size = 4

    def transform(self, dim):
        return T.conditional_affine_autoregressive(dim, dim, hidden_dims=[2 * dim, 2 * dim])


POSTERIORS = ("diag", "lowrank", "full", "mixture", "planar", "iaf")


# -- analytic KL from a diagonal Gaussian prior ------------------------------------------------
def _as_mvn(p: Independent) -> TorchMVN:
    if not isinstance(p.base_dist, Normal) or p.reinterpreted_batch_ndims != 1:
        raise NotImplementedError
    return TorchMVN(p.base_dist.loc, scale_tril=torch.diag_embed(p.base_dist.scale))


@register_kl(TorchMVN, Independent)
def _kl_mvn_diag(q, p):
    return kl_divergence(q, _as_mvn(p))


@register_kl(TorchLowRank, Independent)
def _kl_lowrank_diag(q, p):
    return kl_divergence(q, _as_mvn(p))
