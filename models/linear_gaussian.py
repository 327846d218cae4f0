r"""A linear-Gaussian latent-variable model whose marginal likelihood is known exactly.

Used as the known-answer case for objectives and estimators: with
:math:`z \sim \mathcal N(0, I_d)` and :math:`x|z \sim \mathcal N(Wz + b, \sigma^2 I_D)`,
:math:`\log p(x) = \log \mathcal N(x; b, WW^\top + \sigma^2 I)` (probabilistic PCA; Tipping &
Bishop 1999), so every ELBO and importance-sampled estimate can be checked against the truth.
"""

from __future__ import annotations

import pyro
import torch
from pyro import distributions as dist
from torch import nn

from .base import Batch, LatentVariableModel
from .zoo import register_model


@register_model("linear_gaussian")
class LinearGaussianVAE(LatentVariableModel):
    """Linear decoder with isotropic Gaussian noise; amortized diagonal-Gaussian linear guide.

    :param int x_dim: data dimension D.
    :param int z_dim: latent dimension d.
    :param float sigma: observation noise standard deviation (default 0.5).
    """

    observed_sites = ("x",)

    def __init__(self, x_dim: int = 4, z_dim: int = 2, sigma: float = 0.5):
        super().__init__()
        self.x_dim, self.z_dim = x_dim, z_dim
        self.W = nn.Parameter(torch.randn(x_dim, z_dim))
        self.b = nn.Parameter(torch.randn(x_dim))
        self.log_sigma = nn.Parameter(torch.tensor(float(sigma)).log())
        # guide q(z|x) = N(A x + c, diag(exp(2 log_s)))
        self.A = nn.Parameter(0.1 * torch.randn(z_dim, x_dim))
        self.c = nn.Parameter(torch.zeros(z_dim))
        self.log_s = nn.Parameter(torch.zeros(z_dim))

    def model(self, batch: Batch) -> None:
        with self.data_plate(batch):
            z = pyro.sample("z", dist.Normal(batch.x.new_zeros(()), 1.0).expand([self.z_dim])
                            .to_event(1))
            loc = z @ self.W.T + self.b
            pyro.sample("x", dist.Normal(loc, self.log_sigma.exp()).to_event(1), obs=batch.x)

    def guide(self, batch: Batch) -> None:
        with self.data_plate(batch):
            pyro.sample("z", dist.Normal(self.encode(batch.x), self.log_s.exp()).to_event(1))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.A.T + self.c

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact :math:`\\log p(x)` per datapoint."""
        cov = self.W @ self.W.T + self.log_sigma.exp() ** 2 * torch.eye(self.x_dim)
        return dist.MultivariateNormal(self.b, covariance_matrix=cov).log_prob(x)

    @torch.no_grad()
    def sample_data(self, num: int) -> torch.Tensor:
        z = torch.randn(num, self.z_dim)
        return z @ self.W.T + self.b + self.log_sigma.exp() * torch.randn(num, self.x_dim)

    @torch.no_grad()
    def set_near_optimal_guide(self, inflate: float = 1.0) -> None:
        """Set the guide to the exact posterior's mean map and marginal scales.

        The exact posterior is :math:`\\mathcal N(\\Sigma W^\\top (x-b)/\\sigma^2, \\Sigma)` with
        :math:`\\Sigma = (I + W^\\top W/\\sigma^2)^{-1}`; a diagonal guide can match its means and
        marginal variances but not its correlations, so a gap to log p(x) remains.
        ``inflate`` multiplies the scales (values > 1 widen the guide).
        """
        s2 = self.log_sigma.exp() ** 2
        cov = torch.linalg.inv(torch.eye(self.z_dim) + self.W.T @ self.W / s2)
        self.A.copy_(cov @ self.W.T / s2)
        self.c.copy_(-self.A @ self.b)
        self.log_s.copy_((inflate * cov.diagonal().sqrt()).log())
