"""Missing data: fill the missing part of x from a trained model.

With a mask m (``True`` where x is observed) the target is the model's conditional
p(x_miss | x_obs) = integral of p(x_miss|z) p(z|x_obs) dz. Two samplers run a chain per
image (all images of a batch in parallel):

* **pseudo-Gibbs** (Rezende, Mohamed & Wierstra 2014, section 5): z ~ q(z | x_obs, x_miss),
  then x_miss ~ p(x_miss | z), repeated. It uses the encoder in place of p(z | x), so its
  stationary distribution is the model's conditional only where q is the exact posterior;
* **Metropolis-within-Gibbs** (Mattei & Frellsen 2018, "Leveraging the exact likelihood of
  deep latent variable models", algorithm 1): the encoder's z' ~ q(z | x_obs, x_miss) is a
  proposal, accepted with probability

      min(1, p(x|z') p(z') q(z|x) / (p(x|z) p(z) q(z'|x))),   x = (x_obs, x_miss),

  with p(x|z) the whole image's likelihood at the chain's current x: an independence
  Metropolis-Hastings step that leaves p(z | x_obs, x_miss) invariant, so with
  x_miss ~ p(x_miss | z) it is a Gibbs sampler of p(z, x_miss | x_obs) and targets
  p(x_miss | x_obs) exactly, whatever the encoder.

The single imputation is the mean of p(x_miss | z) averaged over the chain's last half.

A model qualifies with ``prior(like)`` (p(z), batched like ``like``), ``posterior(x)`` (q(z|x))
and ``observation(z)`` (p(x|z), factorizing over x's values: Bernoulli or Gaussian pixels).
"""

from __future__ import annotations

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
    return all(hasattr(model, m) for m in ("prior", "posterior", "observation"))


@dataclass
class Imputation:
    """:ivar samples: ``(steps, *x.shape)``, the chain's x with its missing part filled.
    :ivar mean: ``x.shape``, the single imputation (observed part kept).
    :ivar acceptance: the fraction of z proposals accepted (1 for pseudo-Gibbs)."""

    samples: torch.Tensor
    mean: torch.Tensor
    acceptance: float


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
def impute(model, x: torch.Tensor, mask: torch.Tensor, sampler: str = "mwg", steps: int = 200,
           init: torch.Tensor | None = None) -> Imputation:
    """Run ``sampler`` (``pseudo-gibbs`` or ``mwg``) for ``steps`` steps on images ``x`` with
    ``mask`` (bool, ``x``'s shape, ``True`` = observed). The chain starts with the missing
    values at ``init`` (default 0.5 for values in [0, 1], else 0) and z ~ q(z|x)."""
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
    step = SAMPLERS[sampler]
    samples, means, accepted = [], [], []
    for _ in range(steps):
        z, accept = step(model, current, z)
        if accept is not None:
            accepted.append(accept.float().mean())
        p_x = model.observation(z)
        current = torch.where(mask, x, elementwise(p_x).sample())
        samples.append(current)
        means.append(torch.where(mask, x, p_x.mean))
    mean = torch.stack(means[steps // 2:]).mean(0)
    acceptance = float(torch.stack(accepted).mean()) if accepted else 1.0
    return Imputation(torch.stack(samples), mean, acceptance)
