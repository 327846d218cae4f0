r"""The maximum mean discrepancy between the aggregate posterior and the prior, InfoVAE's
default divergence (Zhao, Song & Ermon 2019, eq. 10).

The squared MMD between q(z) = E_x q(z|x) and p(z) is estimated from the batch's posterior
samples and as many prior samples by the unbiased U-statistic of Gretton et al. (2012, eq. 3),
with a Gaussian kernel :math:`k(a, b) = \exp(-\lVert a-b\rVert^2 / (2 h))`, h = ``bandwidth``
(default: the latent dimension).

Why not Pyro's :class:`~pyro.infer.Trace_MMD`: it treats only the particle dimension as the
sample dimension and everything else (the datapoints too) as one event, so with one particle it
compares a single M×D sample with a single prior draw; InfoVAE's MMD is over the datapoints of
the batch. Under data-parallel training each rank's MMD is over its shard.
"""

from __future__ import annotations

import torch


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


class MMD:
    """InfoVAE's divergence D(q(z) ‖ p(z)) as MMD² (:func:`mmd2_unbiased`); nothing to train.

    :param bandwidth: the Gaussian kernel's h; ``None``: the latent dimension.
    """

    name = "mmd"
    critic: torch.nn.Module | None = None

    def __init__(self, bandwidth: float | None = None):
        self.bandwidth = bandwidth

    def bind(self, latent_size: int, device: torch.device) -> None:
        """Nothing to build: the kernel has no parameters."""

    def __call__(self, z_q: torch.Tensor, z_p: torch.Tensor) -> tuple[torch.Tensor, float]:
        """``(MMD² estimate, 0)``: no surrogate loss, nothing to train."""
        return mmd2_unbiased(z_q, z_p, self.bandwidth or float(z_q.shape[-1])), 0.0
