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

import pyro
import torch
from pyro import poutine
from pyro.infer import ELBO
from pyro.infer.enum import get_importance_trace
from pyro.poutine.util import prune_subsample_sites

from models.base import DATA_PLATE

PARTICLE_PLATE = "num_particles_vectorized"


class ImportanceWeightedELBO(ELBO):
    r"""The IWAE bound per datapoint (Burda et al. 2016), vectorized over ``num_particles``.

    The loss is :math:`-\frac{N}{M}\sum_{i=1}^M \big(\operatorname{logsumexp}_j \log w_{ij}
    - \log k\big)`, the N/M factor coming from the data plate's subsampling scale. With ``k = 1``
    it is the single-sample ELBO (SGVB estimator A of Kingma & Welling 2014).

    :param int num_particles: k, the number of importance samples per datapoint (default 5).
    :param str plate_name: name of the datapoint plate (default ``"data"``).
    :param bool require_reparam: refuse guides with non-reparameterizable latents (needed for
        gradients; evaluation, which only needs values, turns it off).

    .. note:: Every sample site must lie inside the datapoint plate and every latent site must be
        reparameterizable; use ``elbo`` or ``score`` otherwise.

    References: Burda, Grosse & Salakhutdinov, *Importance Weighted Autoencoders*, ICLR 2016.
    """

    def __init__(self, num_particles: int = 5, plate_name: str = DATA_PLATE,
                 require_reparam: bool = True):
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

    def log_weights(self, model, guide, *args, **kwargs) -> tuple[torch.Tensor, float]:
        r"""Returns ``(log_w, scale)``: ``log_w[j, i] = log p(x_i, z_ij) - log q(z_ij | x_i)``
        of shape ``(num_particles, M)`` and the data plate's scale N/M."""
        nesting = self._plate_nesting(model, guide, args, kwargs)
        particles = pyro.plate(PARTICLE_PLATE, self.num_particles, dim=-(nesting + 1))
        model_trace, guide_trace = get_importance_trace(
            "flat", nesting + 1, particles(model), particles(guide), args, kwargs)
        log_w: torch.Tensor | float = 0.0
        scales = set()
        for sign, trace in ((1.0, model_trace), (-1.0, guide_trace)):
            for name, site in trace.nodes.items():
                if site["type"] != "sample":
                    continue
                if sign < 0 and self.require_reparam and not site["fn"].has_rsample:
                    raise ValueError(
                        f"iwae needs reparameterized latents, but guide site {name!r} uses "
                        f"{type(site['fn']).__name__} without rsample; use elbo=score instead")
                log_w = log_w + sign * self._per_datapoint(name, site, nesting + 1)
                scales.add(float(site["scale"]) if not torch.is_tensor(site["scale"])
                           or site["scale"].numel() == 1 else None)
        if len(scales) != 1 or None in scales:
            raise ValueError(
                "iwae needs one common scale (the data plate's N/M) on every sample site; "
                f"found scales {sorted(map(str, scales))}. Remove poutine.scale from the model "
                "or use elbo/meanfield")
        assert torch.is_tensor(log_w)
        return log_w.expand(self.num_particles, -1), scales.pop()

    def _per_datapoint(self, name: str, site: dict, ndim: int) -> torch.Tensor:
        frames = [f for f in site["cond_indep_stack"] if f.name == self.plate_name]
        if not frames:
            raise ValueError(
                f"iwae computes a bound per datapoint, but sample site {name!r} is outside the "
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
        log_w, scale = self.log_weights(model, guide, *args, **kwargs)
        return -scale * self.bound(log_w).sum()

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

    def __init__(self, alpha: float = 0.5, num_particles: int = 5, **kwargs):
        if alpha < 0:
            raise ValueError(f"renyi_alpha must be >= 0 (a lower bound), got {alpha}")
        super().__init__(num_particles=num_particles, **kwargs)
        self.alpha = float(alpha)

    def bound(self, log_w):
        if self.alpha == 1.0:
            return log_w.mean(0)
        one_minus = 1.0 - self.alpha
        return (torch.logsumexp(one_minus * log_w, dim=0) - math.log(self.num_particles)) / one_minus
