r"""Gradient-estimator diagnostics: variance and signal-to-noise ratio of the encoder's and the
decoder's gradients on a fixed batch (``aevb diagnose gradients``).

For each estimator the objective's gradient on the same batch is drawn ``repeats`` times
(fresh noise each time). For every parameter θ_i the draws give the mean m_i and the unbiased
variance v_i of ∂L/∂θ_i; the table reports, per group of parameters (encoder = the guide's
networks, decoder = the model's; :func:`parameter_groups` reads which is which from a trace):

* ``variance``: the mean of v_i over the group's parameters;
* ``snr``: the median of \|m_i\| / sqrt(v_i), the signal-to-noise ratio of Rainforth et al.
  (2018, eq. 4), over the group's parameters with v_i > 0;
* ``grad_norm``: ||m||, the size of the mean gradient.

This measures Kingma & Welling's (2014, section 2.4 and Figure 2) central argument: the
reparameterized gradient of the encoder has far lower variance than the score-function
(REINFORCE) one.

Estimator names: ``reparam`` (``elbo``, SGVB estimator A), ``meanfield`` (estimator B),
``score`` (the score-function gradient), ``iwaeK`` (the IWAE bound with k = K), and any
objective name of :data:`aevb.inference.objectives.OBJECTIVES`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from pyro import poutine
from pyro.poutine.subsample_messenger import _Subsample

from aevb.inference.errors import ConfigError
from aevb.inference.objectives import IncompatibleObjective, Objective, objective_for_model
from aevb.models.base import Batch


@dataclass
class GradientStats:
    """Per-parameter-group gradient statistics of one estimator: mean, variance and signal-to-noise ratio over
    repeated draws."""
    estimator: str
    group: str
    parameters: int
    variance: float
    snr: float
    grad_norm: float


def parameter_groups(model, batch: Batch) -> dict[str, list[tuple[str, torch.nn.Parameter]]]:
    """Encoder (the parameters the guide's latent sample sites depend on: its networks, flows
    included) and decoder (the rest: the model's), read from a trace of the guide on ``batch``
    whatever the modules are called."""
    params = dict(model.named_parameters())
    with torch.random.fork_rng(devices=[]), poutine.block():
        trace = poutine.trace(model.guide).get_trace(batch)
    terms = []
    for site in trace.nodes.values():
        if site["type"] == "sample" and not site["is_observed"] and \
                not isinstance(site["fn"], _Subsample):
            terms.append(site["fn"].log_prob(site["value"]).sum())
            if site["value"].is_floating_point():
                terms.append(site["value"].sum())
    guide_side: set[str] = set()
    if terms:
        grads = torch.autograd.grad(torch.stack(terms).sum(), list(params.values()),
                                    allow_unused=True)
        guide_side = {n for n, g in zip(params, grads, strict=True) if g is not None}
    groups: dict[str, list] = {"encoder": [], "decoder": []}
    for name, p in params.items():
        groups["encoder" if name in guide_side else "decoder"].append((name, p))
    return {g: ps for g, ps in groups.items() if ps}


#: estimator names that are not objective names
ESTIMATOR_ALIASES = {"reparam": "elbo"}


def parse_estimator(name: str) -> tuple[str, int]:
    """``iwae5`` -> ``("iwae", 5)``; ``reparam`` -> ``("elbo", 1)``: the objective and its
    samples, or a :class:`ConfigError` naming ``--estimators`` and the valid names."""
    from aevb.inference.objectives import OBJECTIVES

    match = re.fullmatch(r"([a-z-]+?)(\d*)", name)
    base = ESTIMATOR_ALIASES.get(match.group(1), match.group(1)) if match else None
    if match is None or base not in OBJECTIVES or (match.group(2) and int(match.group(2)) < 1):
        valid = ", ".join([*ESTIMATOR_ALIASES, *OBJECTIVES.names()])
        raise ConfigError(f"--estimators: cannot read {name!r}; give comma-separated names "
                          f"({valid}), each optionally with its number of samples, e.g. "
                          f"reparam,score,iwae5")
    return base, int(match.group(2) or 1)


def estimator_objective(name: str, model, batch: Batch) -> Objective:
    """``reparam`` -> elbo; ``iwae5`` -> iwae with k = 5; other names as registered. The
    objective is tried once on ``batch``, so an estimator the model cannot take fails here,
    before any statistics are gathered."""
    base, k = parse_estimator(name)
    try:
        objective = objective_for_model(base, k, model, batch)
        with torch.random.fork_rng(devices=[]):
            objective.differentiable_loss(model.model, model.guide, batch)
    except (IncompatibleObjective, ValueError, NotImplementedError) as exc:
        raise ConfigError(f"--estimators: {name} cannot estimate this model's gradients "
                          f"({str(exc).splitlines()[0]}); leave {name} out of --estimators"
                          ) from None
    return objective


def gradient_statistics(model, objective: Objective, batch: Batch, repeats: int, name: str = ""
                        ) -> list[GradientStats]:
    """Per group: mean variance, median SNR and mean-gradient norm over ``repeats`` draws of the
    gradient of ``objective`` on ``batch`` (the loss per datapoint)."""
    if repeats < 2:
        raise ConfigError("--repeats must be >= 2 to estimate a variance")
    groups = parameter_groups(model, batch)
    sums = {g: [torch.zeros_like(p) for _, p in ps] for g, ps in groups.items()}
    squares = {g: [torch.zeros_like(p) for _, p in ps] for g, ps in groups.items()}
    for _ in range(repeats):
        model.zero_grad(set_to_none=True)
        loss = objective.differentiable_loss(model.model, model.guide, batch) / len(batch)
        loss.backward()
        for g, ps in groups.items():
            for s, q, (_, p) in zip(sums[g], squares[g], ps, strict=True):
                grad = p.grad if p.grad is not None else torch.zeros_like(p)
                s += grad
                q += grad * grad
    model.zero_grad(set_to_none=True)
    out = []
    for g in groups:
        mean = torch.cat([s.flatten() for s in sums[g]]) / repeats
        second = torch.cat([q.flatten() for q in squares[g]]) / repeats
        var = ((second - mean ** 2) * repeats / (repeats - 1)).clamp_min(0)
        noisy = var > 0
        snr = (mean[noisy].abs() / var[noisy].sqrt()).median() if noisy.any() else torch.tensor(
            math.inf)
        out.append(GradientStats(name, g, mean.numel(), float(var.mean()), float(snr),
                                 float(mean.norm())))
    return out
