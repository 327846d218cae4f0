"""A Gaussian-mixture VAE written as plain Pyro under aevb's contract (models/base.py).

Generative model: a cluster c ~ Uniform{1..K}, z | c ~ N(mu_c, diag sigma_c^2) with (mu_c, sigma_c)
from a linear layer of one-hot(c), x | z Bernoulli. Guide: q(c|x) — enumerated, so
TraceEnum_ELBO sums over the K clusters exactly — and q(z|x). The same model as a spec is
``configs/specs/gmvae.yaml``; ``notebooks/define_a_model.ipynb`` trains both.

    aevb train model=examples/gmvae.py:GMVAE train.epochs=5
"""

from __future__ import annotations

import math

import pyro
import torch
import torch.nn.functional as F
from pyro import distributions as dist
from torch import nn

from aevb.models.base import Batch, LatentVariableModel


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def _normal(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    loc, raw_scale = params.chunk(2, dim=-1)
    return loc, F.softplus(raw_scale) + 1e-5


class GMVAE(LatentVariableModel):
    """:param x_shape: image shape. :param z_dim: latent size. :param num_components: K.
    :param hidden: hidden units of the encoder, classifier and decoder."""

    def __init__(self, x_shape=(1, 28, 28), z_dim: int = 10, num_components: int = 10,
                 hidden: int = 400):
        super().__init__()
        self.x_shape, self.z_dim, self.num_components = tuple(x_shape), z_dim, num_components
        pixels = math.prod(self.x_shape)
        self.classifier = _mlp([pixels, hidden, num_components])   # q(c|x)
        self.encoder = _mlp([pixels, hidden, 2 * z_dim])            # q(z|x)
        self.prior_net = _mlp([num_components, 2 * z_dim])          # p(z|c)
        self.decoder = _mlp([z_dim, hidden, pixels])                # p(x|z)

    def _likelihood(self, z: torch.Tensor) -> dist.TorchDistribution:
        logits = self.decoder(z).unflatten(-1, self.x_shape)
        return dist.Bernoulli(logits=logits, validate_args=False).to_event(3)

    def _prior_z(self, c: torch.Tensor) -> dist.TorchDistribution:
        loc, scale = _normal(self.prior_net(F.one_hot(c, self.num_components).float()))
        return dist.Normal(loc, scale).to_event(1)

    def model(self, batch: Batch) -> None:
        with self.data_plate(batch):
            c = pyro.sample("c", dist.Categorical(logits=batch.x.new_zeros(self.num_components)))
            z = pyro.sample("z", self._prior_z(c))
            pyro.sample("x", self._likelihood(z), obs=batch.x)

    def guide(self, batch: Batch) -> None:
        x = batch.x.flatten(1)
        with self.data_plate(batch):
            pyro.sample("c", dist.Categorical(logits=self.classifier(x)),
                        infer={"enumerate": "parallel"})
            loc, scale = _normal(self.encoder(x))
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    # pictures
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return _normal(self.encoder(x.flatten(1)))[0]

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self._likelihood(self.encode(x)).mean

    def generate(self, num_samples: int) -> torch.Tensor:
        device = next(self.parameters()).device
        c = torch.arange(num_samples, device=device) % self.num_components
        return self._likelihood(self._prior_z(c).sample()).mean

    def check_data(self, x: torch.Tensor) -> None:
        if float(x.min()) < 0 or float(x.max()) > 1:
            raise ValueError("GMVAE's Bernoulli likelihood needs data in [0, 1]")
