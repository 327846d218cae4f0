"""Observation models p(x|z) for image data, chosen by name from :data:`LIKELIHOODS`.

A decoder emits ``num_params * C`` channels per pixel; the likelihood splits them into its
parameters and returns a Pyro distribution with ``event_dim == 3`` (C, H, W).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pyro import distributions as dist

from .registry import Registry


class Likelihood:
    """Base class: ``num_params`` decoder channels per data channel."""

    num_params: int = 1

    def __call__(self, params: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def check_data(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` if ``x`` is outside the likelihood's support."""


LIKELIHOODS: Registry[type[Likelihood]] = Registry("likelihood")


@LIKELIHOODS.register("bernoulli")
class BernoulliLikelihood(Likelihood):
    """Bernoulli pixels with logits from the decoder (Kingma & Welling 2014, appendix C.1).

    For binary data this is a log-likelihood. For grayscale data in [0, 1] (``binarization:
    none``) ``log_prob`` is the negative binary cross-entropy, which is *not* a normalised
    log-likelihood; aevb labels such figures accordingly.
    """

    def __init__(self, min_scale: float = 0.0):
        del min_scale

    def __call__(self, params):
        # validate_args=False: grayscale targets in [0, 1] are allowed (cross-entropy, see above)
        return dist.Bernoulli(logits=params, validate_args=False).to_event(3)

    def mean(self, params):
        return torch.sigmoid(params)

    def check_data(self, x):
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"the Bernoulli likelihood needs data in [0, 1], but the data range is "
                f"[{lo:g}, {hi:g}]; rescale the data to [0, 1] (e.g. divide 8-bit images by 255) "
                f"or use model.likelihood=gaussian for real-valued data"
            )


@LIKELIHOODS.register("gaussian")
class GaussianLikelihood(Likelihood):
    """Diagonal Gaussian with a learned per-pixel scale, floored at ``min_scale``.

    The paper's Frey Face decoder (Kingma & Welling 2014, appendix C.2) outputs a mean and a
    log-variance; we map the second output through ``softplus`` and add ``min_scale`` so that
    constant pixels (e.g. a black background) cannot drive the density to infinity.
    """

    num_params = 2

    def __init__(self, min_scale: float = 0.01):
        if min_scale <= 0:
            raise ValueError(f"model.min_scale must be > 0 for a Gaussian likelihood, got {min_scale}")
        self.min_scale = min_scale

    def _split(self, params):
        loc, raw_scale = params.chunk(2, dim=-3)
        return loc, F.softplus(raw_scale) + self.min_scale

    def __call__(self, params):
        loc, scale = self._split(params)
        return dist.Normal(loc, scale).to_event(3)

    def mean(self, params):
        return self._split(params)[0]
