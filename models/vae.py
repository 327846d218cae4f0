"""The variational autoencoder of Kingma & Welling (2014) as a Pyro model/guide pair."""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import torch
from pyro import distributions as dist

from .base import Batch, LatentVariableModel, check_images
from .families import FAMILIES, VALUE_TYPES, BernoulliFamily, DiagonalNormal, build_family
from .networks import build_network, final_linear
from .posteriors import POSTERIORS
from .zoo import register_model


@register_model("vae")
class VAE(LatentVariableModel):
    r"""Auto-Encoding Variational Bayes (Kingma & Welling 2014, section 3 and appendix C).

    Generative model: :math:`p(z) = \mathcal N(0, I)`, :math:`p_\theta(x|z)` Bernoulli or
    Gaussian with parameters from the decoder. Guide: :math:`q_\phi(z|x) =
    \mathcal N(\mu_\phi(x), \operatorname{diag}\sigma^2_\phi(x))` from the encoder.

    :param tuple x_shape: shape of one observation, ``(C, H, W)``.
    :param int z_dim: latent dimension (default 50).
    :param str network: ``"mlp"`` (default), ``"conv"`` (images of any size) or any name registered
        in :data:`~aevb.models.networks.NETWORKS`.
    :param hidden_sizes: hidden layer sizes of the encoder; the decoder mirrors them
        (default ``(400,)``).
    :param str activation: hidden activation (default ``"tanh"``, as in the paper).
    :param str likelihood: ``"bernoulli"`` (default), ``"gaussian"`` or another family of
        :data:`~aevb.models.families.FAMILIES`.
    :param float min_scale: floor of the Gaussian likelihood's scale (default 0.01).
    :param str posterior: the family of q(z|x): ``diag`` (default, the paper's), ``lowrank``,
        ``full``, ``mixture``, ``planar`` or ``iaf`` (see :mod:`aevb.models.posteriors`).
    :param int posterior_size: the rank (``lowrank``), number of components (``mixture``) or
        of flow steps (``planar``, ``iaf``); ``None`` for the family's default.
    """

    observed_sites = ("x",)

    def __init__(
        self,
        x_shape: Sequence[int] = (1, 28, 28),
        z_dim: int = 50,
        network: str = "mlp",
        hidden_sizes: Sequence[int] = (400,),
        activation: str = "tanh",
        likelihood: str = "bernoulli",
        min_scale: float = 0.01,
        posterior: str = "diag",
        posterior_size: int | None = None,
    ):
        super().__init__()
        self.x_shape = tuple(x_shape)
        self.z_dim = z_dim
        scaled = issubclass(FAMILIES.get(likelihood), DiagonalNormal)
        options = {"min_scale": min_scale} if scaled else {}
        self.likelihood = build_family(likelihood, self.x_shape, **options)
        if posterior not in POSTERIORS:
            raise ValueError(f"posterior={posterior!r} is not one of {', '.join(POSTERIORS)}")
        if posterior == "diag":
            if posterior_size is not None:
                raise ValueError("posterior_size applies to lowrank, full, mixture, planar and "
                                 "iaf posteriors, not to diag")
            self.posterior_family = build_family("diag", (z_dim,))
        else:
            self.posterior_family = build_family(posterior, (z_dim,), size=posterior_size)
        if getattr(self.posterior_family, "module", None) is not None:
            self.posterior_flow = self.posterior_family.module  # registered: trained with the rest
        self.encoder = build_network(network, [self.x_shape], self.posterior_family.param_shape,
                                     hidden_sizes, activation)
        self.decoder = build_network(network, [(z_dim,)], self.likelihood.param_shape,
                                     list(reversed(list(hidden_sizes))), activation)

    # -- the model/guide pair -------------------------------------------------------------
    def prior(self, like: torch.Tensor) -> dist.TorchDistribution:
        return VALUE_TYPES.get("normal").standard((self.z_dim,), None, like)

    def model(self, batch: Batch) -> None:
        with self.data_plate(batch):
            z = pyro.sample("z", self.prior(batch.x))
            pyro.sample("x", self.likelihood(self.decoder(z)), obs=batch.x)

    def guide(self, batch: Batch) -> None:
        q = self.posterior_family(self.encoder(batch.x))
        with self.data_plate(batch):
            pyro.sample("z", q)

    # -- helpers used by the trainer, evaluation and pictures -----------------------------
    def logit_layers(self) -> dict:
        layer = final_linear(self.decoder)
        return {"x": layer} if isinstance(self.likelihood, BernoulliFamily) and layer else {}

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        """q(z|x)."""
        return self.posterior_family(self.encoder(x))

    def posterior_params(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's output: the parameters of q(z|x) (refined per image by
        :mod:`aevb.uses.amortization`)."""
        return self.encoder(x)

    def posterior_from(self, params: torch.Tensor) -> dist.TorchDistribution:
        """q(z|x) of the posterior family with these parameters."""
        return self.posterior_family(params)

    def observation(self, z: torch.Tensor) -> dist.TorchDistribution:
        """p(x|z)."""
        return self.likelihood(self.decoder(z))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mean (for flows: the base mean pushed through the flow)."""
        return self.posterior_family.mean(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Mean of p(x|z)."""
        return self.likelihood.mean(self.decoder(z))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def generate(self, num_samples: int) -> torch.Tensor:
        device = next(self.parameters()).device
        z = torch.randn(num_samples, self.z_dim, device=device)
        return self.decode(z)

    def check_data(self, x: torch.Tensor) -> None:
        check_images(x, self.x_shape, self.likelihood)

