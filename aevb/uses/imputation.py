"""Missing data: fill the missing part of x from a trained model.

With a mask m (``True`` where x is observed) the target is the model's conditional
p(x_miss | x_obs) = integral of p(x_miss|z) p(z|x_obs) dz. Two samplers run a chain per
image (all images of a batch in parallel):

* **pseudo-Gibbs** (Rezende, Mohamed & Wierstra 2014, section 5): z ~ q(z | x_obs, x_miss),
  then x_miss ~ p(x_miss | z), repeated. It uses the encoder in place of p(z | x), so its
  stationary distribution is the model's conditional only where q is the exact posterior;
* **Metropolis-within-Gibbs** (Mattei & Frellsen 2018, "Leveraging the exact likelihood of
  deep latent variable models", algorithm 1): the encoder's z' ~ q(z | x_obs, x_miss) is a
  proposal, accepted with probability::

      min(1, p(x|z') p(z') q(z|x) / (p(x|z) p(z) q(z'|x))),   x = (x_obs, x_miss),

  with p(x|z) the whole image's likelihood at the chain's current x: an independence
  Metropolis-Hastings step that leaves p(z | x_obs, x_miss) invariant, so with
  x_miss ~ p(x_miss | z) it is a Gibbs sampler of p(z, x_miss | x_obs) and targets
  p(x_miss | x_obs) exactly, whatever the encoder.

MWG is an independence sampler: where the encoder's proposals are far from the chain's state
it rarely moves, as from a cold start with the missing values at 0.5 (acceptance near 0 on an
MNIST VAE). Its chain therefore starts from ``warmup`` pseudo-Gibbs steps, which choose where
it starts and leave its target unchanged (on an MNIST VAE, 20 of them lifted the acceptance
from 0.06% to 4-5%).

The single imputation is the mean of p(x_miss | z) averaged over the chain's last half. With
the complete images (``truth``), the held-out values' log-likelihood
log p(x_miss | x_obs) = log p(x) - log p(x_obs) is importance-sampled (k = ``num_samples``, the
proposal q(z | x) of the complete image for both terms): a figure of the model, not of the
sampler.

A model qualifies with ``prior(like)`` (p(z), batched like ``like``), ``posterior(x)`` (q(z|x))
and ``observation(z)`` (p(x|z), factorizing over x's values: Bernoulli or Gaussian pixels).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.distributions import Distribution, Independent


def elementwise(d: Distribution) -> Distribution:
    """``d`` without its event dimensions: one draw per value of x, to be masked."""
    while isinstance(d, Independent):
        d = d.base_dist
    return d


def can_impute(model) -> bool:
    """Whether the model has what imputation needs: ``prior``, ``posterior`` and ``observation``."""
    return all(hasattr(model, m) for m in ("prior", "posterior", "observation"))


@dataclass
class Imputation:
    """:ivar samples: ``(steps, *x.shape)``, the chain's x with its missing part filled.
    :ivar mean: ``x.shape``, the single imputation (observed part kept).
    :ivar acceptance: the fraction of z proposals accepted (1 for pseudo-Gibbs).
    :ivar heldout_log_likelihood: ``(len(x),)`` with ``truth``: log p(x_miss | x_obs) in
        nats, importance-sampled (see the module's docstring), else ``None``."""

    samples: torch.Tensor
    mean: torch.Tensor
    acceptance: float
    heldout_log_likelihood: torch.Tensor | None = None


# -- masks: True where a value is observed -----------------------------------------------------
def _centre(shape):
    h, w = shape[-2:]
    mask = torch.ones(shape, dtype=torch.bool)
    mask[..., h // 4: h // 4 + h // 2, w // 4: w // 4 + w // 2] = False
    return mask


def _half(which):
    def make(shape):
        h = shape[-2]
        mask = torch.ones(shape, dtype=torch.bool)
        rows = slice(0, h // 2) if which == "top" else slice(h // 2, h)
        mask[..., rows, :] = False
        return mask
    return make


MASKS: dict[str, Callable] = {"center": _centre, "top": _half("top"),
                              "bottom": _half("bottom")}


def make_mask(kind: str, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """``shape`` (one image's, or a batch's) bool mask: ``center`` (a centred square of half
    the side missing), ``top`` or ``bottom`` (that half missing), ``random:RATE`` (each value
    missing with probability RATE, from ``seed``) or a ``.npy`` / ``.pt`` file of 0/1
    (1 = observed) broadcastable to ``shape``."""
    if kind in MASKS:
        return MASKS[kind](shape)
    if kind.startswith("random:"):
        try:
            rate = float(kind.split(":", 1)[1])
        except ValueError:
            rate = -1.0
        if not 0 < rate < 1:
            raise ValueError(f"mask {kind!r}: give random:RATE with 0 < RATE < 1, e.g. "
                             "random:0.5")
        gen = torch.Generator().manual_seed(seed)
        return torch.rand(shape, generator=gen) >= rate
    if kind.endswith((".npy", ".pt")):
        from pathlib import Path

        import numpy as np

        path = Path(kind)
        if not path.is_file():
            raise ValueError(f"mask file {kind} does not exist")
        values = (torch.from_numpy(np.load(path)) if kind.endswith(".npy")
                  else torch.load(path, weights_only=True))
        try:
            return torch.broadcast_to(values.bool(), shape).clone()
        except RuntimeError:
            raise ValueError(f"mask file {kind} has shape {tuple(values.shape)}, which does not "
                             f"broadcast to the images' {tuple(shape)}") from None
    raise ValueError(f"mask {kind!r} is not one of {', '.join(MASKS)}, random:RATE or a "
                     ".npy/.pt file")


def _pseudo_gibbs_step(model, x, z):
    return model.posterior(x).sample(), None


def _mwg_step(model, x, z):
    """One independence Metropolis-Hastings step on z, targeting p(z | x) at the chain's x."""
    q = model.posterior(x)
    proposal = q.sample()
    prior = model.prior(x)

    def log_weight(v):  # log p(x|v) + log p(v) - log q(v|x); x changed since the last step
        return model.observation(v).log_prob(x) + prior.log_prob(v) - q.log_prob(v)

    new, current = log_weight(proposal), log_weight(z)
    accept = torch.rand_like(new).log() < new - current
    keep = accept.reshape(-1, *([1] * (z.dim() - 1)))
    return torch.where(keep, proposal, z), accept


SAMPLERS: dict[str, Callable] = {"pseudo-gibbs": _pseudo_gibbs_step, "mwg": _mwg_step}


@torch.no_grad()
def heldout_log_likelihood(model, truth: torch.Tensor, mask: torch.Tensor,
                           num_samples: int = 500, chunk: int = 100) -> torch.Tensor:
    """``(len(truth),)``: log p(x_miss | x_obs) = log p(x) - log p(x_obs), both
    importance-sampled from q(z | x) of the complete image."""
    q = model.posterior(truth)
    full, observed = [], []
    for start in range(0, num_samples, chunk):
        z = q.sample((min(chunk, num_samples - start),))
        flat, xs = z.flatten(0, 1), truth.expand(len(z), *truth.shape).flatten(0, 1)
        values = elementwise(model.observation(flat)).log_prob(xs)
        base = model.prior(xs).log_prob(flat).reshape(len(z), -1) - q.log_prob(z)
        full.append(base + values.flatten(1).sum(-1).reshape(len(z), -1))
        seen = (values * mask.expand(len(z), *mask.shape).flatten(0, 1)).flatten(1).sum(-1)
        observed.append(base + seen.reshape(len(z), -1))

    def log_mean(parts):
        return torch.logsumexp(torch.cat(parts), 0) - math.log(num_samples)
    return log_mean(full) - log_mean(observed)


@torch.no_grad()
def impute(model, x: torch.Tensor, mask: torch.Tensor, sampler: str = "mwg", steps: int = 200,
           init: torch.Tensor | None = None, truth: torch.Tensor | None = None,
           warmup: int = 20, num_samples: int = 500) -> Imputation:
    """Run ``sampler`` (``pseudo-gibbs`` or ``mwg``) for ``steps`` steps on images ``x`` with
    ``mask`` (bool, ``x``'s shape, ``True`` = observed). The chain starts with the missing
    values at ``init`` (default 0.5 for values in [0, 1], else 0) and z ~ q(z|x); MWG runs
    ``warmup`` pseudo-Gibbs steps first. With ``truth`` (the complete images) it also estimates
    the held-out values' log-likelihood with ``num_samples`` importance samples."""
    if not can_impute(model):
        raise ValueError(f"{type(model).__name__} lacks prior(like), posterior(x) or "
                         "observation(z); imputation needs all three (see aevb.uses.imputation)")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler {sampler!r} is not one of {', '.join(SAMPLERS)}")
    if steps < 2:
        raise ValueError(f"steps={steps}: a chain needs at least 2 steps")
    if mask.shape != x.shape:
        raise ValueError(f"the mask has shape {tuple(mask.shape)}, x {tuple(x.shape)}")
    model.eval()
    mask = mask.bool()
    fill = init if init is not None else torch.full_like(
        x, 0.5 if bool(((x >= 0) & (x <= 1)).all()) else 0.0)
    current = torch.where(mask, x, fill)
    z = model.posterior(current).sample()
    for _ in range(warmup if sampler == "mwg" else 0):  # where the chain starts
        z = model.posterior(current).sample()
        current = torch.where(mask, x, elementwise(model.observation(z)).sample())
    step = SAMPLERS[sampler]
    samples, means, accepted = [], [], []
    for _ in range(steps):
        z, accept = step(model, current, z)
        if accept is not None:
            accepted.append(accept.float().mean())
        p_x = model.observation(z)
        values = elementwise(p_x)
        current = torch.where(mask, x, values.sample())
        samples.append(current)
        means.append(torch.where(mask, x, p_x.mean))
    mean = torch.stack(means[steps // 2:]).mean(0)
    acceptance = float(torch.stack(accepted).mean()) if accepted else 1.0
    log_lik = heldout_log_likelihood(model, truth, mask, num_samples) if truth is not None \
        else None
    return Imputation(torch.stack(samples), mean, acceptance, log_lik)
