"""Pyro's ``Trace_ELBO`` and ``TraceMeanField_ELBO`` whose ``differentiable_loss`` never waits
for the device.

Pyro's ``differentiable_loss`` reads numbers back to the host on every call:
``Trace_ELBO`` calls ``.item()`` on every sample site's ``log_prob_sum`` and on the surrogate loss
(it returns ``loss + (surrogate - surrogate.item())``, the ELBO's value with the surrogate's
gradient), ``TraceMeanField_ELBO`` calls it on each particle's ELBO, and both pass the loss to
``warn_if_nan``, which tests ``isnan(loss).any()`` and registers a backward hook that tests the
gradient the same way. On a GPU each read stalls the host until the queued kernels finish; on a
CPU each costs Python and dispatch time. At batch 128 with 8-unit networks (where Pyro's
bookkeeping is all there is) the reads take about 0.2 ms of a 1.5 ms step.

The subclasses below compute the same value and the same gradient from the same traces, with
tensors only:

* :class:`SyncFreeTrace_ELBO`: when every guide site is reparameterized (no score-function
  term), Pyro's surrogate *is* the ELBO, so the loss is
  ``-(sum of model log_prob_sum - sum of guide log_prob_sum) / num_particles``
  (Kingma & Welling 2014, eq. 6, estimator A). A trace with score-function sites takes Pyro's own
  per-particle code (and its reads).
* :class:`SyncFreeTraceMeanField_ELBO`: the sum of the observed sites' ``log_prob_sum`` minus
  each latent's closed-form, scaled and masked KL(q || p) (eq. 7, estimator B). Objectives built
  by :mod:`aevb.inference.objectives` reach it only for models whose latents all have a closed-form
  KL and ``rsample`` (checked before training); anything else takes Pyro's code.

A non-finite loss is caught by the trainer once per epoch instead of per step. Pyro's
``loss`` and ``loss_and_grads`` (the plain ``SVI`` path) are untouched.
"""

from __future__ import annotations

import torch
from pyro.distributions.util import is_identically_zero, scale_and_mask
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch.distributions import kl_divergence


def _total(terms):
    """The sum of a non-empty iterable of tensors, without a leading ``0 +`` (one autograd node
    fewer per sum)."""
    it = iter(terms)
    total = next(it)
    for term in it:
        total = total + term
    return total


def _mean(particles: list, num_particles: int) -> torch.Tensor:
    loss = _total(particles)
    return loss if num_particles == 1 else loss / num_particles


def _sample_sites(trace):
    return (site for site in trace.nodes.values() if site["type"] == "sample")


def _reparameterized(guide_trace) -> bool:
    return all(is_identically_zero(site["score_parts"].score_function)
               for site in _sample_sites(guide_trace))


def _pyro_particle(elbo, model_trace, guide_trace) -> torch.Tensor:
    """Pyro's value and gradient for one (vectorized) particle, as Pyro combines them."""
    loss, surrogate = elbo._differentiable_loss_particle(model_trace, guide_trace)
    return surrogate + (loss - surrogate.detach())


class SyncFreeTrace_ELBO(Trace_ELBO):
    """:class:`~pyro.infer.Trace_ELBO` without host reads (see the module docstring)."""

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        particles = []
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            if _reparameterized(guide_trace):
                particles.append(_total(s["log_prob_sum"] for s in _sample_sites(guide_trace))
                                 - _total(s["log_prob_sum"] for s in _sample_sites(model_trace)))
            else:
                particles.append(_pyro_particle(self, model_trace, guide_trace))
        return _mean(particles, self.num_particles)


class SyncFreeTraceMeanField_ELBO(TraceMeanField_ELBO):
    """:class:`~pyro.infer.TraceMeanField_ELBO` without host reads (see the module
    docstring)."""

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        particles = []
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            particle = self._negative_elbo(model_trace, guide_trace)
            particles.append(_pyro_particle(self, model_trace, guide_trace) if particle is None
                             else particle)
        return _mean(particles, self.num_particles)

    @staticmethod
    def _negative_elbo(model_trace, guide_trace) -> torch.Tensor | None:
        """-(sum of observed log-densities - sum of analytic KLs), or ``None`` where a latent
        has no closed-form KL or ``rsample``, or the guide has auxiliary sites."""
        guide_sites = {name: site for name, site in guide_trace.nodes.items()
                       if site["type"] == "sample"}
        log_px, kl = [], []
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample":
                continue
            if site["is_observed"]:
                log_px.append(site["log_prob_sum"])
                continue
            q = guide_sites.pop(name)
            if not q["fn"].has_rsample:
                return None
            try:
                kl_qp = kl_divergence(q["fn"], site["fn"])
            except NotImplementedError:
                return None
            kl.append(scale_and_mask(kl_qp, scale=q["scale"], mask=q["mask"]).sum())
        if guide_sites or not log_px:
            return None
        return _total(kl) - _total(log_px) if kl else -_total(log_px)
