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

    def prior(self, like: torch.Tensor) -> dist.TorchDistribution:
        """p(z) = N(0, I), batched as ``like``'s first dimension."""
        return dist.Normal(like.new_zeros(()), 1.0).expand([len(like), self.z_dim]).to_event(1)

    def observation(self, z: torch.Tensor) -> dist.TorchDistribution:
        """p(x|z) = N(W z + b, sigma^2 I)."""
        return dist.Normal(self.decode(z), self.log_sigma.exp()).to_event(1)

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        """q(z|x) = N(A x + c, diag(exp(2 log_s)))."""
        return self.posterior_from(self.posterior_params(x))

    def posterior_params(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, 2d)``: q's mean and log scale per image (the log scale is shared)."""
        return torch.cat([self.encode(x), self.log_s.expand(len(x), -1)], dim=-1)

    def posterior_from(self, params: torch.Tensor) -> dist.TorchDistribution:
        loc, log_scale = params.split(self.z_dim, dim=-1)
        return dist.Normal(loc, log_scale.exp()).to_event(1)

    def model(self, batch: Batch) -> None:
        with self.data_plate(batch):
            z = pyro.sample("z", dist.Normal(batch.x.new_zeros(()), 1.0).expand([self.z_dim])
                            .to_event(1))
            pyro.sample("x", self.observation(z), obs=batch.x)

    def guide(self, batch: Batch) -> None:
        with self.data_plate(batch):
            pyro.sample("z", self.posterior(batch.x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.A.T + self.c

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The mean of p(x|z), W z + b."""
        return z @ self.W.T + self.b

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact :math:`\\log p(x)` per datapoint."""
        cov = self.W @ self.W.T + self.log_sigma.exp() ** 2 * torch.eye(self.x_dim, device=self.W.device)
        return dist.MultivariateNormal(self.b, covariance_matrix=cov).log_prob(x)

    def exact_elbo(self, x: torch.Tensor) -> torch.Tensor:
        r"""The ELBO of the current guide in closed form, per datapoint:
        :math:`\mathbb E_q[\log p(x|z)] - \mathrm{KL}(q(z|x)\,\|\,p(z))` with
        :math:`\mathbb E_q\|x - Wz - b\|^2 = \|x - W\mu - b\|^2 + \operatorname{tr}(W S W^\top)`."""
        mu, s2 = self.encode(x), (2 * self.log_s).exp()
        var = self.log_sigma.exp() ** 2
        sq = ((x - mu @ self.W.T - self.b) ** 2).sum(-1) + (self.W ** 2 @ s2).sum()
        expected_log_lik = -0.5 * self.x_dim * torch.log(2 * torch.pi * var) - 0.5 * sq / var
        kl = 0.5 * (mu ** 2 + s2 - 1 - s2.log()).sum(-1)
        return expected_log_lik - kl

    @torch.no_grad()
    def sample_data(self, num: int) -> torch.Tensor:
        z = torch.randn(num, self.z_dim, device=self.W.device)
        noise = torch.randn(num, self.x_dim, device=self.W.device)
        return z @ self.W.T + self.b + self.log_sigma.exp() * noise

    @torch.no_grad()
    def set_near_optimal_guide(self, inflate: float = 1.0) -> None:
        r"""Set the guide to the best diagonal Gaussian, optionally widened.

        The exact posterior is :math:`\mathcal N(\Sigma W^\top (x-b)/\sigma^2, \Sigma)` with
        precision :math:`\Lambda = \Sigma^{-1} = I + W^\top W/\sigma^2`. The diagonal Gaussian
        minimising KL(q || posterior) has the exact mean and variances :math:`1/\Lambda_{ii}`
        (mean-field; Bishop 2006, section 10.1.2), so a gap to log p(x) remains whenever the
        posterior is correlated. ``inflate`` multiplies the scales (values > 1 widen the guide).
        """
        s2 = self.log_sigma.exp() ** 2
        precision = torch.eye(self.z_dim, device=self.W.device) + self.W.T @ self.W / s2
        self.A.copy_(torch.linalg.solve(precision, self.W.T) / s2)
        self.c.copy_(-self.A @ self.b)
        self.log_s.copy_((inflate / precision.diagonal().sqrt()).log())
