"""The amortization gap (Cremer, Li & Duvenaud 2018, "Inference suboptimality in variational
autoencoders"): how much of the inference gap log p(x) - ELBO comes from sharing one encoder
across the data.

For each image a q of the encoder's family is optimized on its own ELBO by stochastic gradient
(Adam, reparameterized, ``samples`` draws per step), starting from the encoder's output. With
L_amortized the encoder's ELBO, L_refined the optimized one and log p(x) importance-sampled
with the refined q as the proposal (``num_samples`` draws),

    inference gap     = log p(x) - L_amortized
                      = (L_refined - L_amortized)   [the amortization gap]
                      + (log p(x) - L_refined)      [the approximation gap: the family's limit]

in nats per image. A model qualifies with ``prior(like)``, ``observation(z)``,
``posterior_params(x)`` (the encoder's output for q) and ``posterior_from(params)`` (q).
"""

from __future__ import annotations

import math

import torch


def can_refine(model) -> bool:
    """Whether the model has what refinement needs: the contract's optional ``prior``,
    ``observation``, ``posterior_params`` and ``posterior_from``."""
    return all(hasattr(model, m) for m in ("prior", "observation", "posterior_params",
                                            "posterior_from"))


def _log_weights(model, x: torch.Tensor, q, samples: int) -> torch.Tensor:
    """``(samples, len(x))``: log p(x, z) - log q(z) for z ~ q (reparameterized)."""
    z = q.rsample((samples,))
    flat = z.flatten(0, 1)
    xs = x.expand(samples, *x.shape).flatten(0, 1)
    log_joint = model.prior(xs).log_prob(flat) + model.observation(flat).log_prob(xs)
    return log_joint.reshape(samples, len(x)) - q.log_prob(z)


def refine(model, x: torch.Tensor, steps: int = 100, lr: float = 1e-2, samples: int = 10
           ) -> torch.Tensor:
    """The per-image parameters of q after ``steps`` steps of Adam on each image's ELBO,
    starting from the encoder's (the network is not changed)."""
    if not can_refine(model):
        raise ValueError(f"{type(model).__name__} lacks prior, observation, posterior_params or "
                         "posterior_from; refinement needs all four (see aevb.uses.amortization)")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            params = model.posterior_params(x).clone()
        params.requires_grad_(True)
        optimizer = torch.optim.Adam([params], lr=lr)
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            # the sum over images: each image's parameters get their own ELBO's gradient
            loss = -_log_weights(model, x, model.posterior_from(params), samples).mean(0).sum()
            loss.backward()
            optimizer.step()
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    return params.detach()


@torch.no_grad()
def elbo_and_log_likelihood(model, x: torch.Tensor, q, num_samples: int, chunk: int = 100
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(len(x),)`` each: the ELBO under ``q`` and log p(x) importance-sampled from ``q``."""
    log_w = torch.cat([_log_weights(model, x, q, min(chunk, num_samples - i))
                       for i in range(0, num_samples, chunk)])
    return log_w.mean(0), torch.logsumexp(log_w, 0) - math.log(num_samples)


def amortization_gap(model, x: torch.Tensor, steps: int = 100, lr: float = 1e-2,
                     samples: int = 10, num_samples: int = 1000, batch_size: int = 100) -> dict:
    """The figures of the module's docstring, means over ``x``, in nats per image (computed
    ``batch_size`` images at a time)."""
    if len(x) > batch_size:
        parts = [amortization_gap(model, x[i:i + batch_size], steps, lr, samples, num_samples,
                                  batch_size) for i in range(0, len(x), batch_size)]
        merged = dict(parts[0])
        for key in ("elbo_amortized", "elbo_refined", "log_likelihood",
                    "log_likelihood_amortized_proposal", "inference_gap", "amortization_gap",
                    "approximation_gap"):
            merged[key] = sum(p[key] * p["images"] for p in parts) / len(x)
        merged["images"] = len(x)
        return merged
    with torch.no_grad():
        amortized = model.posterior_from(model.posterior_params(x))
    elbo_amortized, ll_amortized = elbo_and_log_likelihood(model, x, amortized, num_samples)
    refined = model.posterior_from(refine(model, x, steps, lr, samples))
    elbo_refined, ll_refined = elbo_and_log_likelihood(model, x, refined, num_samples)
    log_px = ll_refined  # the refined q is the better proposal
    mean = lambda v: float(v.mean())  # noqa: E731
    return {"images": len(x), "refine_steps": steps, "refine_lr": lr,
            "refine_samples": samples, "num_samples": num_samples,
            "elbo_amortized": mean(elbo_amortized), "elbo_refined": mean(elbo_refined),
            "log_likelihood": mean(log_px),
            "log_likelihood_amortized_proposal": mean(ll_amortized),
            "inference_gap": mean(log_px - elbo_amortized),
            "amortization_gap": mean(elbo_refined - elbo_amortized),
            "approximation_gap": mean(log_px - elbo_refined)}
