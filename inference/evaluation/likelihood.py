"""Evaluation of a trained model, every figure per datapoint in nats.

* **Test ELBO**: the mean over k guide samples of :math:`\\log p(x,z) - \\log q(z|x)`.
* **Importance-sampled log-likelihood** (Burda et al. 2016, section 5; Rezende et al. 2014):
  :math:`\\log p(x) \\approx \\log \\frac1k\\sum_j p(x,z_j)/q(z_j|x)` with k = 5000 by default,
  computed in chunks of samples and of datapoints so memory is bounded, with a running
  log-sum-exp.
* **Active units** (Burda et al. 2016, section 5.2): unit u is active when
  :math:`\\operatorname{Cov}_x(\\mathbb E_{q(u|x)}[u]) > 0.01`.
"""

from __future__ import annotations

import math

import pyro
import torch
from tqdm.auto import tqdm

from aevb.inference.batching import Split
from aevb.inference.objectives.importance import ImportanceWeightedELBO
from aevb.inference.threads import apply_share
from aevb.models.base import LatentVariableModel, call_with_labels, for_evaluation


@torch.no_grad()
def importance_sampled(model: LatentVariableModel, split: Split, num_samples: int = 5000,
                       sample_chunk: int = 100, batch_size: int = 20, progress: bool = False
                       ) -> dict[str, torch.Tensor]:
    """Per-datapoint ``log_likelihood`` (IS, k = ``num_samples``) and ``elbo`` (mean log-weight)
    over ``split``, as tensors of shape ``(len(split),)``. Labels are hidden from models that can
    infer them (:func:`~aevb.models.base.for_evaluation`), so the figures are log p(x); discrete
    latents are sampled from the guide like the others."""
    with pyro.validation_enabled(False):  # the model was validated when it was trained
        return _importance_sampled(model, split, num_samples, sample_chunk, batch_size, progress)


def _importance_sampled(model, split, num_samples, sample_chunk, batch_size, progress):
    estimators: dict[int, ImportanceWeightedELBO] = {}
    # the per-datapoint figures go straight into preallocated outputs: small tensors kept per
    # batch would pin the allocator's heap between the chunks' large buffers and let it grow
    device = split.x.device
    log_px = torch.empty(len(split), device=device)
    elbo = torch.empty(len(split), device=device)
    start = 0
    # counted in images, the rate averaged over the whole evaluation (smoothing=0): a steady
    # estimate of the time left
    bar = tqdm(total=len(split), disable=not progress, unit="img", smoothing=0, leave=False,
               desc=f"log p(x): {num_samples} importance samples x {len(split)} images")
    for batch in split.batches(batch_size):
        apply_share()
        running = torch.full((len(batch),), -math.inf, device=device)
        total_w = torch.zeros(len(batch), device=device)
        done = 0
        while done < num_samples:
            k = min(sample_chunk, num_samples - done)
            if k not in estimators:
                estimators[k] = ImportanceWeightedELBO(num_particles=k, require_reparam=False)
            est = estimators[k]
            log_w, _ = est.log_weights(model.model, model.guide, for_evaluation(model, batch))
            running = torch.logaddexp(running, torch.logsumexp(log_w, dim=0))
            total_w += log_w.sum(0)
            done += k
        end = start + len(batch)
        log_px[start:end] = running - math.log(num_samples)
        elbo[start:end] = total_w / num_samples
        start = end
        bar.update(len(batch))
    bar.close()
    return {"log_likelihood": log_px, "elbo": elbo}


@torch.no_grad()
def mean_elbo(model: LatentVariableModel, split: Split, batch_size: int = 500,
              num_particles: int = 1) -> float:
    """Mean per-datapoint ELBO over ``split`` (single-sample estimate by default)."""
    est = ImportanceWeightedELBO(num_particles=num_particles, require_reparam=False)
    total = 0.0
    for batch in split.batches(batch_size):
        log_w, _ = est.log_weights(model.model, model.guide, for_evaluation(model, batch))
        total += float(log_w.mean(0).sum())
    return total / len(split)


@torch.no_grad()
def active_units(model: LatentVariableModel, split: Split, batch_size: int = 500,
                 threshold: float = 0.01) -> int | None:
    """Number of latent units with :math:`\\operatorname{Cov}_x(\\mathbb E_q[u]) >` threshold,
    or ``None`` when the model has no ``encode``."""
    if not hasattr(model, "encode"):
        return None
    means = torch.cat([call_with_labels(model, "encode", b.x, b.y).float().reshape(len(b), -1)
                       for b in split.batches(batch_size)])
    return int((means.var(0) > threshold).sum())


def evaluate(model: LatentVariableModel, split: Split, num_samples: int, sample_chunk: int,
             batch_size: int, progress: bool = False) -> dict:
    """All test figures of one model as a JSON-ready dict."""
    model.eval()
    est = importance_sampled(model, split, num_samples, sample_chunk, batch_size, progress)
    n = len(split)
    ll, elbo = est["log_likelihood"], est["elbo"]
    return {
        "num_images": n,
        "num_samples": num_samples,
        "log_likelihood": float(ll.mean()),
        "log_likelihood_stderr": float(ll.std() / math.sqrt(n)) if n > 1 else 0.0,
        "elbo": float(elbo.mean()),
        "gap": float((ll - elbo).mean()),
        "active_units": active_units(model, split, batch_size),
        # figures of the model's own (VQ-VAE: reconstruction, code perplexity)
        **(model.evaluation_figures(split, batch_size)
           if hasattr(model, "evaluation_figures") else {}),
    }
