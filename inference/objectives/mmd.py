r"""The InfoVAE objective (Zhao, Song & Ermon 2019, eq. 6) with the MMD divergence (eq. 10):

.. math:: \mathcal L = \sum_i \Big(\mathbb E_{q(z|x_i)}[\log p(x_i|z)]
          - (1-\alpha)\,\mathrm{KL}\big(q(z|x_i)\,\|\,p(z)\big)\Big)
          \;-\; (\alpha+\lambda-1)\, N\, \mathrm{MMD}^2\big(q(z), p(z)\big).

α = 0, λ = 1 is the ELBO; α = 1 the MMD-VAE (``elbo=mmd``, weight λ on MMD²). The per-datapoint
terms are estimated on the minibatch with the plate's N/M scale, the KL from the guide's own
sample (as ``Trace_ELBO`` does), and the squared
maximum mean discrepancy between the *aggregate* posterior q(z) = E_x q(z|x) and the prior
estimated from the batch's posterior samples and as many prior samples (the unbiased
U-statistic of Gretton et al. 2012, eq. 3) with a Gaussian kernel
:math:`k(a, b) = \exp(-\lVert a-b\rVert^2 / (2 h))`, h = ``bandwidth`` (default: the latent
dimension).

Why not Pyro's :class:`~pyro.infer.Trace_MMD`: it treats only the particle dimension as the
sample dimension and everything else (the datapoints too) as one event, so with one particle it
compares a single M×D sample with a single prior draw; InfoVAE's MMD is over the datapoints of
the batch. Under data-parallel training each rank's MMD is over its shard.
"""

from __future__ import annotations

import torch
from pyro import poutine
from pyro.infer import ELBO
from pyro.poutine.subsample_messenger import _Subsample

from aevb.models.base import DATA_PLATE


def gaussian_kernel(a: torch.Tensor, b: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """The Gaussian kernel matrix exp(−‖a_i − b_j‖² / (2·bandwidth)) between two sample sets."""
    return torch.exp(-torch.cdist(a, b).pow(2) / (2.0 * bandwidth))


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """Unbiased estimate of MMD²(P, Q) from samples x ~ P, y ~ Q, each of shape (n, D), n ≥ 2."""
    n, m = len(x), len(y)
    kxx, kyy, kxy = (gaussian_kernel(x, x, bandwidth), gaussian_kernel(y, y, bandwidth),
                     gaussian_kernel(x, y, bandwidth))
    return ((kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
            + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1)) - 2.0 * kxy.mean())


class InfoVAEObjective(ELBO):
    """The InfoVAE loss with weights ``alpha`` (α) and ``lam`` (λ). Every latent site must be
    reparameterized and lie in the datapoint plate."""

    def __init__(self, alpha: float = 0.0, lam: float = 1000.0, bandwidth: float | None = None,
                 plate_name: str = DATA_PLATE):
        super().__init__(num_particles=1)
        if lam < 0:
            raise ValueError(f"λ (info_lambda / mmd_scale) must be >= 0, got {lam}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"α (info_alpha) must be in [0, 1], got {alpha}")
        self.alpha, self.lam = float(alpha), float(lam)
        self.bandwidth, self.plate_name = bandwidth, plate_name

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs)
        model_trace.compute_log_prob()
        kl_weight = 1.0 - self.alpha
        if kl_weight:
            guide_trace.compute_log_prob()
        reconstruction: torch.Tensor | float = 0.0
        kl: torch.Tensor | float = 0.0
        posterior, prior = [], []
        num_data = None
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample" or isinstance(site["fn"], _Subsample):
                continue
            if site["is_observed"]:
                reconstruction = reconstruction + site["log_prob_sum"]
                continue
            frames = [f for f in site["cond_indep_stack"] if f.name == self.plate_name]
            if not frames or not guide_trace.nodes[name]["fn"].has_rsample:
                raise ValueError(f"mmd needs every latent site reparameterized and inside the "
                                 f"{self.plate_name!r} plate; {name!r} is not; use elbo")
            if kl_weight:  # log q(z|x) - log p(z) at the guide's sample, N/M-scaled
                kl = kl + guide_trace.nodes[name]["log_prob_sum"] - site["log_prob_sum"]
            value = site["value"]
            num_data = value.shape[0] * float(site["scale"])  # M times the plate's N/M
            posterior.append(value.reshape(value.shape[0], -1))
            draw = site["fn"].rsample() if site["fn"].has_rsample else site["fn"].sample()
            prior.append(draw.reshape(value.shape[0], -1))
        if not posterior:
            raise ValueError("mmd found no latent site in the model")
        z_q, z_p = torch.cat(posterior, -1), torch.cat(prior, -1)
        if len(z_q) < 2:
            raise ValueError("mmd needs minibatches of at least 2 datapoints")
        bandwidth = self.bandwidth or float(z_q.shape[-1])
        divergence_weight = self.alpha + self.lam - 1.0
        loss = -reconstruction + kl_weight * kl
        if divergence_weight:
            loss = loss + divergence_weight * num_data * mmd2_unbiased(z_q, z_p, bandwidth)
        return loss

    def _get_trace(self, model, guide, args, kwargs):  # ELBO's abstract hook; not used
        raise NotImplementedError("InfoVAEObjective computes its loss in differentiable_loss")

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return float(loss.detach())


class MMDObjective(InfoVAEObjective):
    """The MMD-VAE: InfoVAE with α = 1, ``mmd_scale`` = λ."""

    def __init__(self, mmd_scale: float = 1000.0, bandwidth: float | None = None,
                 plate_name: str = DATA_PLATE):
        super().__init__(1.0, mmd_scale, bandwidth, plate_name)
        self.mmd_scale = self.lam
