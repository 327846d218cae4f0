r"""VQ-VAE (van den Oord, Vinyals & Kavukcuoglu 2017) as a Pyro model/guide pair.

The encoder maps a 28x28 image to a 7x7 grid of D-dimensional vectors :math:`z_e(x)`; each is
replaced by its nearest codebook vector, :math:`z_q = e_k`, :math:`k = \arg\min_j \|z_e - e_j\|`
(eq. 1-2). The guide is the deterministic posterior: a ``Delta`` on the quantized grid whose value
is :math:`z_e + \operatorname{sg}[z_q - z_e]`, so the decoder's gradient passes straight through
to the encoder (section 3.2). The guide adds the paper's other two terms (eq. 3) as a factor on
training passes,

.. math:: \|\operatorname{sg}[z_e(x)] - e\|^2 + \beta\,\|z_e(x) - \operatorname{sg}[e]\|^2,

the codebook term being left out when the codebook follows exponential moving averages instead
(``ema=True``; appendix A.1). The model's prior over the code grid is either the paper's uniform
one during training (``prior="uniform"``: log p(c) = -49 log K) or a small autoregressive model
(``prior="autoregressive"``, a PixelCNN-style stack of masked convolutions; van den Oord et al.
2016), trained on the detached codes alongside the autoencoder instead of in a second stage, so
``generate`` samples code grids from it. Either way the trainer's ``elbo`` is a lower bound on
log p(x): with a deterministic q, :math:`\log p(x) \ge \log p(x|z_q) + \log p(c)`.

Train it with ``elbo=elbo`` (the default); the evaluation reports the reconstruction
cross-entropy, the codebook's perplexity and the number of codes used besides that bound.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro
import torch
import torch.nn.functional as F
from pyro import distributions as dist
from torch import nn
from torch.distributions import constraints

from .base import Batch, LatentVariableModel, check_images
from .families import build_family
from .networks import ACTIVATIONS
from .zoo import register_model

GRID = 7  # 28 -> 14 -> 7
#: decay of the running per-batch usage count of each code, and the count below which a code
#: is restarted
USAGE_DECAY, DEAD_USAGE = 0.99, 0.03


class MaskedConv2d(nn.Conv2d):
    """A convolution that sees only the positions before the centre in raster order (mask
    ``"A"``) or up to and including it (``"B"``): PixelCNN's causal mask."""

    def __init__(self, mask: str, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        m = torch.ones_like(self.weight)
        c = kernel_size // 2
        m[:, :, c, c + (mask == "B"):] = 0
        m[:, :, c + 1:] = 0
        self.register_buffer("mask", m)

    def forward(self, x):
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class CodePrior(nn.Module):
    """An autoregressive model of a grid of code indices: logits of position i depend on the
    codes before i in raster order only."""

    def __init__(self, num_codes: int, channels: int = 64, layers: int = 3):
        super().__init__()
        self.num_codes = num_codes
        self.embed = nn.Embedding(num_codes, channels)
        convs: list[nn.Module] = [MaskedConv2d("A", channels, channels, 5)]
        for _ in range(layers - 1):
            convs += [nn.ReLU(), MaskedConv2d("B", channels, channels, 3)]
        self.net = nn.Sequential(*convs, nn.ReLU(), nn.Conv2d(channels, num_codes, 1))

    def logits(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes (..., H, W)`` -> ``logits (..., H, W, K)``."""
        lead, (h, w) = codes.shape[:-2], codes.shape[-2:]
        e = self.embed(codes.reshape(-1, h, w)).permute(0, 3, 1, 2)
        return self.net(e).permute(0, 2, 3, 1).reshape(*lead, h, w, self.num_codes)

    @torch.no_grad()
    def sample(self, n: int, device) -> torch.Tensor:
        codes = torch.zeros(n, GRID, GRID, dtype=torch.long, device=device)
        for i in range(GRID):
            for j in range(GRID):
                logits = self.logits(codes)[:, i, j]
                codes[:, i, j] = torch.distributions.Categorical(logits=logits).sample()
        return codes


class CodeGridDistribution(dist.TorchDistribution):
    """The prior over quantized grids ``(D, 7, 7)``: a value is mapped to its codes by nearest
    codebook vector (no gradient) and scored by the code prior (uniform or autoregressive)."""

    arg_constraints: dict = {}
    support = constraints.real_vector

    def __init__(self, owner: VQVAE, batch_shape):
        self.owner = owner
        super().__init__(torch.Size(batch_shape), torch.Size((owner.code_dim, GRID, GRID)),
                         validate_args=False)

    def expand(self, batch_shape, _instance=None):
        return CodeGridDistribution(self.owner, batch_shape)

    def log_prob(self, value):
        codes = self.owner.nearest_codes(value.detach())
        return self.owner.code_log_prob(codes)

    def sample(self, sample_shape=()):
        n = math.prod(sample_shape + self.batch_shape)
        codes = self.owner.sample_codes(n).reshape(*sample_shape, *self.batch_shape, GRID, GRID)
        return self.owner.embed_codes(codes)


@register_model("vqvae")
class VQVAE(LatentVariableModel):
    """Vector-quantized VAE for 28x28 images.

    :param int num_codes: K, the codebook size (default 128).
    :param int code_dim: D, the size of a code vector (default 16).
    :param float commitment: β of the commitment loss (default 0.25, the paper's).
    :param bool ema: update the codebook by exponential moving averages (decay ``ema_decay``;
        the default) instead of the codebook loss. With the codebook loss and Adam at lr 1e-3
        the codebook trails the encoder on Fashion-MNIST: the encoder's outputs drift away
        from their codes faster than the commitment term pulls them back.
    :param str prior: ``autoregressive`` (default) or ``uniform``.
    :param str activation: hidden activation of the conv stacks (default ``relu``).
    :param str likelihood: family of p(x|z) (default ``bernoulli``).
    """

    observed_sites = ("x",)

    def __init__(self, x_shape: Sequence[int] = (1, 28, 28), num_codes: int = 128,
                 code_dim: int = 16, commitment: float = 0.25, ema: bool = True,
                 ema_decay: float = 0.99, prior: str = "autoregressive",
                 activation: str = "relu", likelihood: str = "bernoulli"):
        super().__init__()
        self.x_shape = tuple(x_shape)
        if self.x_shape[-2:] != (28, 28):
            raise ValueError(f"vqvae is built for 28x28 images, got shape {self.x_shape}")
        if prior not in ("autoregressive", "uniform"):
            raise ValueError(f"prior={prior!r}: use autoregressive or uniform")
        if num_codes < 2 or code_dim < 1 or commitment < 0 or not 0 < ema_decay < 1:
            raise ValueError("need num_codes >= 2, code_dim >= 1, commitment >= 0 and "
                             "0 < ema_decay < 1")
        self.num_codes, self.code_dim, self.commitment = num_codes, code_dim, commitment
        self.ema, self.ema_decay = ema, ema_decay
        self.likelihood = build_family(likelihood, self.x_shape)
        act = ACTIVATIONS.get(activation)
        c = self.x_shape[0]
        self.encoder = nn.Sequential(
            nn.Conv2d(c, 32, 4, 2, 1), act(), nn.Conv2d(32, 64, 4, 2, 1), act(),
            nn.Conv2d(64, code_dim, 1))
        out_channels = self.likelihood.param_shape[0]
        self.decoder = nn.Sequential(
            nn.Conv2d(code_dim, 64, 1), act(), nn.ConvTranspose2d(64, 32, 4, 2, 1), act(),
            nn.ConvTranspose2d(32, out_channels, 4, 2, 1))
        codebook = torch.randn(num_codes, code_dim)
        # codebook vectors are set from encoder outputs on the first training batch, and a code
        # unused for a while is restarted at a random encoder output (dead-code restarts)
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("usage", torch.ones(num_codes))
        if ema:
            self.register_buffer("codebook", codebook)
            self.register_buffer("ema_count", torch.ones(num_codes))
            self.register_buffer("ema_sum", codebook.clone())
        else:
            self.codebook = nn.Parameter(codebook)
        self.code_prior = CodePrior(num_codes) if prior == "autoregressive" else None

    # -- quantization ----------------------------------------------------------------------------
    def nearest_codes(self, z: torch.Tensor) -> torch.Tensor:
        """Codes ``(..., 7, 7)`` of grids ``z (..., D, 7, 7)`` (eq. 1)."""
        flat = z.movedim(-3, -1)  # (..., 7, 7, D)
        distances = ((flat.unsqueeze(-2) - self.codebook) ** 2).sum(-1)
        return distances.argmin(-1)

    def embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        return self.codebook[codes].movedim(-1, -3)

    def code_log_prob(self, codes: torch.Tensor) -> torch.Tensor:
        """log p(c) of code grids ``(..., 7, 7)``, summed over the grid."""
        if self.code_prior is None:
            return torch.full(codes.shape[:-2], -GRID * GRID * math.log(self.num_codes),
                              device=codes.device)
        logits = self.code_prior.logits(codes)
        return torch.distributions.Categorical(logits=logits).log_prob(codes).sum((-1, -2))

    def sample_codes(self, n: int) -> torch.Tensor:
        device = self.codebook.device
        if self.code_prior is None:
            return torch.randint(self.num_codes, (n, GRID, GRID), device=device)
        return self.code_prior.sample(n, device)

    def _encode_grid(self, x: torch.Tensor) -> torch.Tensor:
        return _per_image(self.encoder, x)

    def _decode_grid(self, z: torch.Tensor) -> torch.Tensor:
        return _per_image(self.decoder, z)

    @torch.no_grad()
    def _restart_codes(self, z_e: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Data-dependent initialisation and dead-code restarts: codes never chosen (the first
        batch) or whose running usage fell below ``DEAD_USAGE`` assignments per batch take the
        values of random encoder outputs of the batch. Returns the batch's (new) codes."""
        flat = z_e.movedim(-3, -1).reshape(-1, self.code_dim)
        counts = torch.bincount(codes.reshape(-1), minlength=self.num_codes).type_as(flat)
        self.usage.mul_(USAGE_DECAY).add_(counts, alpha=1 - USAGE_DECAY)
        dead = torch.ones_like(self.usage, dtype=torch.bool) if not self.initialized else \
            self.usage < DEAD_USAGE
        if not dead.any():
            return codes
        picks = flat[torch.randint(len(flat), (int(dead.sum()),), device=flat.device)]
        self.codebook[dead] = picks
        if self.ema:
            self.ema_sum[dead] = picks
            self.ema_count[dead] = 1.0
        self.usage[dead] = 1.0
        self.initialized.fill_(True)
        return self.nearest_codes(z_e)

    @torch.no_grad()
    def _update_codebook(self, z_e: torch.Tensor, codes: torch.Tensor) -> None:
        """EMA codebook (appendix A.1) with Laplace smoothing of the counts."""
        onehot = F.one_hot(codes.reshape(-1), self.num_codes).type_as(z_e)
        flat = z_e.movedim(-3, -1).reshape(-1, self.code_dim)
        g = self.ema_decay
        self.ema_count.mul_(g).add_(onehot.sum(0), alpha=1 - g)
        self.ema_sum.mul_(g).add_(onehot.T @ flat, alpha=1 - g)
        n = self.ema_count.sum()
        count = (self.ema_count + 1e-5) / (n + self.num_codes * 1e-5) * n
        self.codebook.copy_(self.ema_sum / count.unsqueeze(-1))

    # -- the model/guide pair --------------------------------------------------------------------
    def model(self, batch: Batch) -> None:
        with self.data_plate(batch):
            z = pyro.sample("z", CodeGridDistribution(self, (len(batch),)))
            pyro.sample("x", self.likelihood(self._decode_grid(z)), obs=batch.x)

    def guide(self, batch: Batch) -> None:
        z_e = self._encode_grid(batch.x)
        codes = self.nearest_codes(z_e.detach())
        training = self.training and torch.is_grad_enabled()
        if training:
            codes = self._restart_codes(z_e.detach(), codes)
        z_q = self.embed_codes(codes)
        with self.data_plate(batch):
            if training:
                commit = ((z_e - z_q.detach()) ** 2).sum((-1, -2, -3))
                loss = self.commitment * commit
                if self.ema:
                    self._update_codebook(z_e.detach(), codes)
                else:
                    loss = loss + ((z_e.detach() - z_q) ** 2).sum((-1, -2, -3))
                # a guide factor enters the loss with a plus sign
                pyro.factor("vq_loss", loss, has_rsample=True)
            z_st = z_e + (z_q - z_e).detach()  # straight-through
            pyro.sample("z", dist.Delta(z_st, event_dim=3))

    # -- helpers ---------------------------------------------------------------------------------
    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        return self.nearest_codes(self._encode_grid(x))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The quantized grid, flattened."""
        return self.embed_codes(self.codes(x)).flatten(-3)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.likelihood.mean(self._decode_grid(self.embed_codes(self.codes(x))))

    @torch.no_grad()
    def generate(self, num_samples: int) -> torch.Tensor:
        codes = self.sample_codes(num_samples)
        return self.likelihood.mean(self._decode_grid(self.embed_codes(codes)))

    @torch.no_grad()
    def evaluation_figures(self, split, batch_size: int = 500) -> dict:
        """Reconstruction cross-entropy -log p(x|z_q) (nats per image), the codebook's
        perplexity exp(H(average code usage)) and the number of codes used, over ``split``."""
        usage = torch.zeros(self.num_codes, device=split.x.device)
        recon = 0.0
        for batch in split.batches(batch_size):
            codes = self.codes(batch.x)
            usage += torch.bincount(codes.reshape(-1), minlength=self.num_codes)
            params = self._decode_grid(self.embed_codes(codes))
            recon -= float(self.likelihood(params).log_prob(batch.x).sum())
        return {"reconstruction": recon / len(split), "perplexity": perplexity(usage),
                "codes_used": int((usage > 0).sum()), "active_units": None}

    def check_data(self, x: torch.Tensor) -> None:
        check_images(x, self.x_shape, self.likelihood)


def _per_image(net: nn.Module, v: torch.Tensor) -> torch.Tensor:
    """``net`` on ``(..., C, H, W)``: leading dimensions (particles, batch) folded into one."""
    lead = v.shape[: v.dim() - 3]
    out = net(v.reshape(-1, *v.shape[-3:]))
    return out.reshape(*lead, *out.shape[1:])


def perplexity(counts: torch.Tensor) -> float:
    """exp of the entropy of the empirical code distribution (1 = one code, K = all equally)."""
    p = counts / counts.sum()
    return float(torch.exp(-(p[p > 0] * p[p > 0].log()).sum()))
