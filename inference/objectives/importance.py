r"""Per-datapoint importance weights and the importance-weighted bound (IWAE).

For a model whose latents are local to datapoints, the IWAE bound of Burda et al. (2016, eq. 8)
is a sum over datapoints of

.. math:: \mathcal L_k(x_i) = \mathbb E\Big[\log \frac1k \sum_{j=1}^k
          \frac{p(x_i, z_{ij})}{q(z_{ij}|x_i)}\Big],\qquad z_{ij}\sim q(z|x_i).

Pyro's :class:`~pyro.infer.RenyiELBO` with ``alpha=0`` keeps the data plate, so on a whole
dataset it is this bound; but it takes the log-mean-exp of log-weights that already carry the
plate's subsampling scale, i.e. :math:`\log \frac1k\sum_j \exp(\frac NM \log w_{ij})` instead
of :math:`\frac NM \log\frac1k\sum_j w_{ij}`, which under the paper's minibatch scaling is no
longer a lower bound (``tests/test_estimators.py`` shows it exceeding the exact log-likelihood).
This module computes the per-datapoint bound on unscaled weights, then applies N/M.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import pyro
import torch
from pyro import poutine
from pyro.infer import ELBO
from pyro.infer.enum import get_importance_trace
from pyro.poutine.util import prune_subsample_sites

from aevb.models.base import DATA_PLATE

PARTICLE_PLATE = "num_particles_vectorized"


class LogTerms(NamedTuple):
    """Per-datapoint log-densities of importance samples, each ``(num_particles, M)``."""

    log_p: torch.Tensor
    log_q: torch.Tensor
    #: the part of ``log_q`` from sites sampled without rsample (``None`` if there are none)
    log_q_score: torch.Tensor | None
    scale: float


class ImportanceWeightedELBO(ELBO):
    r"""The IWAE bound per datapoint (Burda et al. 2016), vectorized over ``num_particles``.

    The loss is :math:`-\frac{N}{M}\sum_{i=1}^M \big(\operatorname{logsumexp}_j \log w_{ij}
    - \log k\big)`, the N/M factor coming from the data plate's subsampling scale. With ``k = 1``
    it is the single-sample ELBO (SGVB estimator A of Kingma & Welling 2014).

    :param int num_particles: k, the number of importance samples per datapoint (default 5).
    :param str plate_name: name of the datapoint plate (default ``"data"``).
    :param bool require_reparam: refuse guides with latents sampled without rsample. By default
        they are accepted and get VIMCO's score-function gradient with leave-one-out baselines
        (:meth:`score_surrogate`; Mnih & Rezende 2016), so a sigmoid belief net trains on the
        IWAE bound too.

    .. note:: Every sample site must lie inside the datapoint plate; use ``elbo`` or
        ``meanfield`` for models with global latents.

    References: Burda, Grosse & Salakhutdinov, *Importance Weighted Autoencoders*, ICLR 2016.
    """

    name = "iwae"

    def __init__(self, num_particles: int = 5, plate_name: str = DATA_PLATE,
                 require_reparam: bool = False):
        super().__init__(num_particles=num_particles, vectorize_particles=True)
        self.plate_name = plate_name
        self.require_reparam = require_reparam
        self._nesting: int | None = None

    # ----------------------------------------------------------------------------------------
    def _plate_nesting(self, model, guide, args, kwargs) -> int:
        if self._nesting is None:
            # a dry run that leaves the random stream untouched, so seeded runs are reproducible
            devices = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
            with torch.random.fork_rng(devices=devices), poutine.block():
                guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
                model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
                    *args, **kwargs)
            dims = [f.dim for tr in (model_trace, guide_trace)
                    for site in prune_subsample_sites(tr).nodes.values()
                    if site["type"] == "sample" for f in site["cond_indep_stack"] if f.vectorized]
            self._nesting = -min(dims) if dims else 0
        return self._nesting

    def log_terms(self, model, guide, *args, detach: bool = False, **kwargs) -> LogTerms:
        r"""The per-datapoint log-densities of ``num_particles`` joint samples: ``log_p[j, i] =
        log p(x_i, z_ij)``, ``log_q[j, i] = log q(z_ij | x_i)`` (shape ``(num_particles, M)``),
        the part of ``log_q`` from guide sites sampled without ``rsample`` and the data plate's
        scale N/M. ``detach`` stops gradients through the sampled values (wake-sleep)."""
        nesting = self._plate_nesting(model, guide, args, kwargs)
        particles = pyro.plate(PARTICLE_PLATE, self.num_particles, dim=-(nesting + 1))
        model_trace, guide_trace = get_importance_trace(
            "flat", nesting + 1, particles(model), particles(guide), args, kwargs, detach=detach)
        sums: dict[str, torch.Tensor | float] = {"p": 0.0, "q": 0.0}
        score: torch.Tensor | None = None
        scales = set()
        for part, trace in (("p", model_trace), ("q", guide_trace)):
            for name, site in trace.nodes.items():
                if site["type"] != "sample":
                    continue
                lp = self._per_datapoint(name, site, nesting + 1)
                sums[part] = sums[part] + lp
                if part == "q" and not site["fn"].has_rsample and not site["is_observed"]:
                    if self.require_reparam:
                        raise ValueError(
                            f"{self.name} needs reparameterized latents, but guide site {name!r} "
                            f"uses {type(site['fn']).__name__} without rsample; use elbo=iwae "
                            "(VIMCO gradients), elbo=rws or elbo=score instead")
                    score = lp if score is None else score + lp
                scales.add(float(site["scale"]) if not torch.is_tensor(site["scale"])
                           or site["scale"].numel() == 1 else None)
        if len(scales) != 1 or None in scales:
            raise ValueError(
                f"{self.name} needs one common scale (the data plate's N/M) on every sample site; "
                f"found scales {sorted(map(str, scales))}. Remove poutine.scale from the model "
                "or use elbo/meanfield")
        shape = (self.num_particles, -1)
        log_p, log_q = (torch.as_tensor(sums[k]).expand(shape) for k in ("p", "q"))
        return LogTerms(log_p, log_q, None if score is None else score.expand(shape),
                        scales.pop())

    def log_weights(self, model, guide, *args, **kwargs) -> tuple[torch.Tensor, float]:
        r"""Returns ``(log_w, scale)``: ``log_w[j, i] = log p(x_i, z_ij) - log q(z_ij | x_i)``
        of shape ``(num_particles, M)`` and the data plate's scale N/M."""
        terms = self.log_terms(model, guide, *args, **kwargs)
        return terms.log_p - terms.log_q, terms.scale

    def _per_datapoint(self, name: str, site: dict, ndim: int) -> torch.Tensor:
        frames = [f for f in site["cond_indep_stack"] if f.name == self.plate_name]
        if not frames:
            raise ValueError(
                f"{self.name} computes a bound per datapoint, but sample site {name!r} is outside the "
                f"{self.plate_name!r} plate (a global latent?); use elbo or meanfield for such models")
        lp = site["unscaled_log_prob"]
        if site["mask"] is not None:
            lp = lp * site["mask"]
        lp = lp.reshape((1,) * (ndim - lp.dim()) + lp.shape)
        data_dim = ndim + frames[0].dim
        other = [d for d in range(1, ndim) if d != data_dim]
        if other:
            lp = lp.sum(other, keepdim=True)
        return lp.reshape(lp.shape[0], lp.shape[data_dim])

    # -- the ELBO interface --------------------------------------------------------------------
    def _get_trace(self, model, guide, args, kwargs):
        nesting = self._plate_nesting(model, guide, args, kwargs)
        return get_importance_trace("flat", nesting + 1, model, guide, args, kwargs)

    def bound(self, log_w: torch.Tensor) -> torch.Tensor:
        """Per-datapoint bound from log-weights ``(k, M)``: log (1/k) sum_j w_ij."""
        return torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        terms = self.log_terms(model, guide, *args, **kwargs)
        log_w = terms.log_p - terms.log_q
        bound = self.bound(log_w)
        if terms.log_q_score is not None:
            bound = bound + self.score_surrogate(log_w.detach(), bound.detach(), terms.log_q_score)
        return -terms.scale * bound.sum()

    def score_surrogate(self, log_w: torch.Tensor, bound: torch.Tensor,
                        log_q_score: torch.Tensor) -> torch.Tensor:
        r"""A zero-valued term whose gradient is the score-function part of the bound's gradient
        for latents sampled without rsample: VIMCO's (Mnih & Rezende 2016, eq. 9-10)
        :math:`\sum_j (\hat{\mathcal L} - \hat{\mathcal L}_{-j})
        \nabla\log q(z_j|x)`, the
        leave-one-out baseline :math:`\hat{\mathcal L}_{-j}` replacing :math:`\log w_j` by the
        mean of the other log-weights. With ``k = 1`` there is no other sample and no baseline.

        :param log_w: detached log-weights ``(k, M)``. :param bound: the detached bound ``(M,)``.
        """
        k = log_w.shape[0]
        if k == 1:
            signal = bound.unsqueeze(0)
        else:
            others_mean = (log_w.sum(0, keepdim=True) - log_w) / (k - 1)
            replaced = log_w.unsqueeze(0).repeat(k, 1, 1)  # [j, l, i]: sample l with j left out
            diag = torch.arange(k, device=log_w.device)
            replaced[diag, diag] = others_mean
            signal = bound - (torch.logsumexp(replaced, dim=1) - math.log(k))
        return (signal * (log_q_score - log_q_score.detach())).sum(0)

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.item()


class RenyiBound(ImportanceWeightedELBO):
    r"""The variational Rényi bound of Li & Turner (2016, eq. 5 and its k-sample estimator,
    eq. 13) per datapoint:

    .. math:: \mathcal L_\alpha(x_i) = \frac{1}{1-\alpha}\log\frac1k\sum_{j=1}^k
              w_{ij}^{\,1-\alpha},

    with the N/M scale applied after, as for :class:`ImportanceWeightedELBO`. α = 0 is the IWAE
    bound, α → 1 the ELBO (the mean of the log-weights); for fixed samples the estimate falls
    as α rises (power means are monotone), so 0 ≤ α ≤ 1 interpolates between the two.

    :param float alpha: α ≥ 0 (default 0.5).
    """

    name = "renyi"

    def __init__(self, alpha: float = 0.5, num_particles: int = 5, require_reparam: bool = True,
                 **kwargs):
        if alpha < 0:
            raise ValueError(f"renyi_alpha must be >= 0 (a lower bound), got {alpha}")
        super().__init__(num_particles=num_particles, require_reparam=require_reparam, **kwargs)
        self.alpha = float(alpha)

    def bound(self, log_w):
        if self.alpha == 1.0:
            return log_w.mean(0)
        one_minus = 1.0 - self.alpha
        return (torch.logsumexp(one_minus * log_w, dim=0) - math.log(self.num_particles)) / one_minus
