r"""Wake-sleep learning of a model and its recognition network (the guide), per datapoint.

**Reweighted wake-sleep** (RWS; Bornschein & Bengio 2015) draws k samples
:math:`z_{ij} \sim q_\phi(z|x_i)`, treats them as fixed (no pathwise gradient, so discrete
latents need nothing special) and self-normalises the importance weights
:math:`\tilde w_{ij} = w_{ij} / \sum_l w_{il}`, :math:`w_{ij} = p_\theta(x_i, z_{ij}) /
q_\phi(z_{ij}|x_i)`:

* wake phase, model: :math:`\nabla_\theta \sum_j \tilde w_{ij} \log p_\theta(x_i, z_{ij})`, the
  gradient of the IWAE bound with respect to θ;
* wake phase, guide: :math:`\nabla_\phi \sum_j \tilde w_{ij} \log q_\phi(z_{ij}|x_i)`, a
  self-normalised estimate of :math:`-\nabla_\phi \mathrm{KL}(p_\theta(z|x_i) \,\|\,
  q_\phi(z|x_i))`;
* sleep phase, guide: "dreams" :math:`(x', z') \sim p_\theta` and
  :math:`\nabla_\phi \log q_\phi(z'|x')`, the gradient of
  :math:`-\mathbb E_{p(x)}\mathrm{KL}(p(z|x) \,\|\, q(z|x))`.

``insomnia`` mixes the guide's two phases (1: wake only, Bornschein & Bengio's and Le et al.
2019's recommendation; 0: sleep only). **Classic wake-sleep** (Hinton, Dayan, Frey & Neal 1995,
the Helmholtz machine's algorithm) is the case k = 1, insomnia = 0: the model learns from one
recognition sample, the recognition network only from dreams.

Pyro's :class:`~pyro.infer.ReweightedWakeSleep` normalises the weights over the whole minibatch
(one joint weight per particle: it warns that minibatch training is not supported) and needs the
guide to take an ``observations`` argument. Here the weights are per datapoint with the data
plate's N/M applied after, as in
:class:`~aevb.inference.objectives.importance.ImportanceWeightedELBO`, and the dreamed
observations are put back into the batch the guide reads.

The loss is one tensor whose value is minus the IWAE bound (what the trainer logs) and whose
gradient is the RWS update of both θ and φ, so one optimizer steps both.
"""

from __future__ import annotations

from dataclasses import fields, replace

import torch
from pyro import poutine
from pyro.poutine.subsample_messenger import _Subsample

from aevb.inference.objectives.importance import ImportanceWeightedELBO
from aevb.models.base import Batch


class ReweightedWakeSleep(ImportanceWeightedELBO):
    """Reweighted wake-sleep per datapoint; see the module docstring.

    :param int num_particles: k, the wake phase's samples per datapoint.
    :param float insomnia: weight of the wake phase in the guide's update, the rest going to
        the sleep phase (default 1.0).
    """

    name = "rws"

    def __init__(self, num_particles: int = 5, insomnia: float = 1.0, **kwargs):
        if not 0.0 <= insomnia <= 1.0:
            raise ValueError(f"rws_insomnia must be in [0, 1] (1: wake phase only, 0: sleep phase "
                             f"only), got {insomnia}")
        super().__init__(num_particles=num_particles, require_reparam=False, **kwargs)
        self.insomnia = float(insomnia)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        terms = self.log_terms(model, guide, *args, detach=True, **kwargs)
        log_w = terms.log_p - terms.log_q.detach()
        objective = self.bound(log_w)  # its θ-gradient is sum_j w~_ij grad log p(x_i, z_ij)
        if self.insomnia > 0:
            weights = torch.softmax(log_w.detach(), dim=0)
            wake_phi = (weights * terms.log_q).sum(0)
            objective = objective + self.insomnia * (wake_phi - wake_phi.detach())
        loss = -terms.scale * objective.sum()
        if self.insomnia < 1:
            sleep_phi = sleep_log_q(model, guide, *args, **kwargs)
            loss = loss - (1.0 - self.insomnia) * (sleep_phi - sleep_phi.detach())
        return loss


def dream(model, batch: Batch) -> tuple[poutine.Trace, Batch]:
    """One ancestral sample of the model per datapoint of ``batch``: the model's trace with its
    observed sites sampled, and ``batch`` with every field that was observed replaced by the
    dream. The field is the tensor the model observed, or one it is a reshape or cast of
    (``batch.x.reshape(M, -1)``); the dream goes back in the field's shape and dtype."""
    trace = poutine.trace(poutine.uncondition(model)).get_trace(batch)
    trace.detach_()
    dreamt = {}
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or not site["infer"].get("was_observed"):
            continue
        field = _observed_field(batch, site["infer"]["obs"])
        if field is None:
            raise ValueError(f"the sleep phase dreams observed site {name!r}, but its value is not "
                             "a field of the batch (x or y), or a reshape of one, that the guide "
                             "could be shown; observe batch.x (or a view of it)")
        like, value = getattr(batch, field), site["value"]
        if value.shape != like.shape or value.dtype != like.dtype:
            value = value.reshape(like.shape).to(like.dtype)
        dreamt[field] = value
    return trace, replace(batch, **dreamt)


def _observed_field(batch: Batch, obs: torch.Tensor) -> str | None:
    """The batch field the model observed as ``obs``: the same tensor, else one with the same
    values in another shape or dtype."""
    tensors = [(f.name, getattr(batch, f.name)) for f in fields(batch)
               if torch.is_tensor(getattr(batch, f.name))]
    for name, value in tensors:
        if value is obs:
            return name
    for name, value in tensors:
        if value.numel() == obs.numel() and torch.equal(value.reshape(obs.shape).to(obs.dtype),
                                                        obs):
            return name
    return None


def sleep_log_q(model, guide, batch: Batch) -> torch.Tensor:
    r"""The sleep phase's :math:`\frac NM\sum_i \log q_\phi(z'_i|x'_i)` on one dream per datapoint."""
    model_trace, dreamt = dream(model, batch)
    guide_trace = poutine.trace(poutine.replay(guide, trace=model_trace)).get_trace(dreamt)
    guide_trace.compute_log_prob()
    log_q = torch.zeros((), device=batch.x.device)
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or isinstance(site["fn"], _Subsample):
            continue
        if name not in model_trace.nodes:
            raise ValueError(f"the sleep phase needs every guide latent in the model; guide site "
                             f"{name!r} is not sampled by the model")
        log_q = log_q + site["log_prob"].sum()
    return log_q
