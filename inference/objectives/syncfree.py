r"""Pyro's ``Trace_ELBO``, ``TraceMeanField_ELBO`` and ``TraceEnum_ELBO`` whose
``differentiable_loss`` never waits for the device.

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
* :class:`SyncFreeTraceEnum_ELBO`: when the guide enumerates one discrete site in parallel (M2's
  y, a mixture's component) and samples every other site with ``rsample``, and the model
  enumerates nothing of its own, Dice's expectation (Obermeyer et al. 2019) is the plain sum
  :math:`\sum_y q(y|x) [\log p(x, y, z_y) - \log q(y, z_y|x)]` per datapoint (Kingma et al.
  2014, eq. 7), computed from the traces' log-densities without packing them or contracting
  (Pyro's ``Dice.compute_expectation`` reads ``(prob > 0).all()`` back to the host). Other
  structures take Pyro's code.
* :class:`TraceEnumMeanField_ELBO`: the same sum with each continuous latent's
  :math:`\log p(z_y) - \log q(z_y|x, y)` at the sampled :math:`z_y` replaced by
  :math:`-\mathrm{KL}(q(z|x,y) \,\|\, p(z))` in closed form: SGVB estimator B (Kingma &
  Welling 2014, eq. 7) inside the sum over y, as Kingma et al.'s (2014) own code computes M2's
  bound. Pyro has no enumerating ELBO with an analytic KL, so this one has no Pyro fallback: it
  takes the structure above and nothing else.

A non-finite loss is caught by the trainer once per epoch instead of per step. Pyro's
``loss`` and ``loss_and_grads`` (the plain ``SVI`` path) are untouched.
"""

from __future__ import annotations

import torch
from pyro.distributions.util import is_identically_zero, scale_and_mask
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO
from pyro.infer.enum import get_importance_trace
from pyro.infer.traceenum_elbo import _compute_dice_elbo
from pyro.infer.util import is_validation_enabled
from pyro.poutine.subsample_messenger import _Subsample
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


class SyncFreeTraceEnum_ELBO(TraceEnum_ELBO):
    """:class:`~pyro.infer.TraceEnum_ELBO` without host reads and without Dice's tensor
    bookkeeping where the guide enumerates one site (see the module docstring); the tests check
    its value and gradient against Pyro's."""

    def _get_trace(self, model, guide, args, kwargs):
        if is_validation_enabled():  # Pyro's checks (and packing)
            return super()._get_trace(model, guide, args, kwargs)
        model_trace, guide_trace = get_importance_trace(
            "flat", self.max_plate_nesting, model, guide, args, kwargs)
        return model_trace, guide_trace  # packed later, only for Pyro's Dice

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        particles = []
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            elbo = _single_enumeration_elbo(model_trace, guide_trace, self.max_plate_nesting)
            if elbo is None:
                elbo = _dice_elbo(model_trace, guide_trace)
            particles.append(-elbo)
        return _mean(particles, self.num_particles)


class TraceEnumMeanField_ELBO(SyncFreeTraceEnum_ELBO):
    """:class:`SyncFreeTraceEnum_ELBO` with every continuous latent's KL(q || p) in closed form
    (see the module docstring); the tests check it against the sampled estimator's mean."""

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        particles = []
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            elbo = _single_enumeration_elbo(model_trace, guide_trace, self.max_plate_nesting,
                                            analytic_kl=True)
            if elbo is None:
                raise NotImplementedError(
                    "elbo=meanfield sums out at most one enumerated guide site and needs every "
                    "other latent reparameterized with a closed-form KL; use elbo=elbo")
            particles.append(-elbo)
        return _mean(particles, self.num_particles)


def _dice_elbo(model_trace, guide_trace) -> torch.Tensor:
    """Pyro's Dice ELBO of one particle (packing the traces first where they are not)."""
    if guide_trace.plate_to_symbol is None or not any(
            "packed" in site for site in _sample_sites(guide_trace)):
        guide_trace.pack_tensors()
        model_trace.pack_tensors(guide_trace.plate_to_symbol)
    return _compute_dice_elbo(model_trace, guide_trace)


def _single_enumeration_elbo(model_trace, guide_trace, max_plate_nesting: int,
                             analytic_kl: bool = False) -> torch.Tensor | None:
    r""":math:`\sum_{\text{sites}} \sum q(y)\,(\pm\log\text{density})` for a guide that
    enumerates at most one site (``y``) in parallel and reparameterizes every other site, and a
    model that enumerates nothing of its own; ``None`` otherwise. With ``analytic_kl`` each
    reparameterized latent contributes :math:`-\sum q(y)\,\mathrm{KL}(q(z|y) \,\|\, p(z|y))`
    (scaled and masked as its guide site) in place of its two log-densities; ``None`` also where
    a KL has no closed form.

    The weights are :math:`q(y) = \exp` of the enumerated site's masked, unscaled log-density
    (the factor Dice gives it, with its gradient); a term carries y's enumeration dimension
    (``-1 - max_plate_nesting`` of its batch shape) when it depends on y, and is then summed
    against the weights, or else summed as it is.
    """
    enumerated = None
    for site in _sample_sites(guide_trace):
        enumerate_ = site["infer"].get("enumerate")
        if enumerate_ is not None:
            if enumerate_ != "parallel" or enumerated is not None \
                    or site["infer"].get("num_samples") is not None:
                return None
            enumerated = site
        elif not is_identically_zero(site["score_parts"].score_function):
            return None
    for name, site in model_trace.nodes.items():
        if site["type"] == "sample" and site["infer"].get("enumerate") \
                and name not in guide_trace.nodes:
            return None  # the model enumerates a site of its own: Pyro's contraction
    if enumerated is None and not analytic_kl:
        return (_total(s["log_prob_sum"] for s in _sample_sites(model_trace))
                - _total(s["log_prob_sum"] for s in _sample_sites(guide_trace)))
    weights = None if enumerated is None else enumerated["score_parts"].score_function.exp()
    dim = -1 - max_plate_nesting
    size = weights.shape[dim] if weights is not None and weights.dim() >= -dim else 1

    def expected(term: torch.Tensor) -> torch.Tensor:
        if size > 1 and term.dim() >= -dim and term.shape[dim] == size:
            return (weights * term).sum()
        return term.sum()

    closed = {}  # latent name -> its scaled, masked KL(q || p)
    if analytic_kl:
        for name, q in guide_trace.nodes.items():
            if q["type"] != "sample" or q is enumerated or q["is_observed"] \
                    or isinstance(q["fn"], _Subsample):
                continue
            try:
                kl = kl_divergence(q["fn"], model_trace.nodes[name]["fn"])
            except (NotImplementedError, KeyError):
                return None
            closed[name] = scale_and_mask(kl, scale=q["scale"], mask=q["mask"])
    model_terms = [expected(s["log_prob"]) for n, s in model_trace.nodes.items()
                   if s["type"] == "sample" and n not in closed]
    guide_terms = [expected(s["log_prob"]) for n, s in guide_trace.nodes.items()
                   if s["type"] == "sample" and n not in closed]
    guide_terms += [expected(kl) for kl in closed.values()]
    return _total(model_terms) - _total(guide_terms)
