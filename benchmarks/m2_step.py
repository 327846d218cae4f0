"""M2's training step in aevb against the same step written by hand in plain PyTorch.

Both loops train the runner's M2 (``configs/specs/m2.yaml``; Kingma et al. 2014, section 3.1.2)
with the MNIST table's settings (``--alpha 1.0 --labelled-weight balanced``, the z-KL weight
of ``--z-kl-start 10``) on the same batches: one unlabelled and one labelled batch of
``--batch-size`` per step, 100 labels, dynamic binarization. aevb's step is the runner's: the
``fast`` engine on ``TraceEnum_ELBO``, y enumerated in parallel. The hand-written step computes
the same objective with the same networks (copies of aevb's modules, and aevb's CPU kernels for
the scales' softplus and the Bernoulli log-density, so the arithmetic is identical and what is
measured is everything around it): for an unlabelled image

    L(x) = sum_y q(y|x) [log p(x|y,z_y) + log p(y) + w (log p(z_y) - log q(z_y|x,y))] + H(q(y|x)),

one z_y ~ q(z|x,y) per class, and for a labelled one the single-sample ELBO with y observed plus
``aux_weight`` * log q(y|x) (eq. 9); each batch is scaled by its N/M, and both use Adam with
foreach kernels. Before timing, one loss and its gradient from the same weights and the same
random draws are compared (they must agree to float precision): the reference is the same
objective, not a cheaper one.

Trials of ``--steps`` steps alternate (the order rotating every round); the table gives each
loop's median ms/step and the median of the within-round ratios.

    python benchmarks/m2_step.py                          # 5 rounds of 20 steps, all threads
    python benchmarks/m2_step.py --dataset mnist --data-dir ../shared/data/mnist --threads 1

Then M2's k-sample evaluation of log p(x) (``--eval-k``, default 5000, on ``--eval-images``
test images; 0 skips it) against the same estimator written by hand: y ~ q(y|x), z ~ q(z|x,y),
log p(x|y,z) + log p(y) + log p(z) - log q(y|x) - log q(z|x,y), the same chunks, images/s.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _rounds import alternate, table
from torch import nn

from aevb.experiments.semisupervised import Experiment, ExperimentConfig
from aevb.inference.semisupervised import METHODS, Settings, paired_batches
from aevb.inference.training.optim import build_optimizer
from aevb.models import kernels
from aevb.models.base import Batch

ROOT = Path(__file__).resolve().parents[1]
NUM_CLASSES = 10


class HandWrittenM2(nn.Module):
    """M2's objective in plain PyTorch on copies of a compiled M2's three networks."""

    def __init__(self, spec_model, aux_weight: float, min_scale: float = 1e-5):
        super().__init__()
        self.classifier = copy.deepcopy(spec_model.networks["classifier"])
        self.encoder = copy.deepcopy(spec_model.networks["encoder"])
        self.decoder = copy.deepcopy(spec_model.networks["decoder"])
        self.aux_weight, self.min_scale = aux_weight, min_scale
        self.z_weight = 1.0

    def _z_terms(self, x, y_onehot, z_weight: float | None = None):
        """log p(x|y,z) and w (log p(z) - log q(z|x,y)) for one z ~ q(z|x,y) (w: the z-KL
        weight of training unless given)."""
        loc, raw = self.encoder(x, y_onehot).chunk(2, dim=-1)
        scale = kernels.softplus(raw) + self.min_scale
        eps = torch.randn_like(loc)
        z = loc + scale * eps
        log_q = (-0.5 * eps ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_p = (-0.5 * z ** 2 - 0.5 * math.log(2 * math.pi)).sum(-1)
        logits = self.decoder(y_onehot, z)
        log_px = kernels.bernoulli_log_density(logits.flatten(-3), x.flatten(-3))
        return log_px + (self.z_weight if z_weight is None else z_weight) * (log_p - log_q)

    @torch.no_grad()
    def log_weights(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """``(k, M)`` importance log-weights of log p(x): y ~ q(y|x), z ~ q(z|x,y), and
        log p(x|y,z) + log p(y) + log p(z) - log q(y|x) - log q(z|x,y)."""
        log_qy = F.log_softmax(self.classifier(x), dim=-1)  # (M, C)
        y = torch.distributions.Categorical(logits=log_qy).sample((k,))  # (k, M)
        log_qy_of_y = log_qy.T.gather(0, y)  # (k, M)
        return self._z_terms(x, F.one_hot(y, NUM_CLASSES).to(x.dtype), 1.0) \
            - math.log(NUM_CLASSES) - log_qy_of_y

    @torch.no_grad()
    def log_likelihood(self, split, num_samples: int, sample_chunk: int, batch_size: int
                       ) -> torch.Tensor:
        """Per-image log p(x) by importance sampling with k = ``num_samples``, in chunks of
        samples and of images with a running log-sum-exp (what ``aevb evaluate`` computes)."""
        out = []
        for batch in split.batches(batch_size):
            running = torch.full((len(batch),), -math.inf, device=batch.x.device)
            done = 0
            while done < num_samples:
                k = min(sample_chunk, num_samples - done)
                running = torch.logaddexp(running, torch.logsumexp(self.log_weights(batch.x, k), 0))
                done += k
            out.append(running - math.log(num_samples))
        return torch.cat(out)

    def loss(self, unlabelled: Batch, labelled: Batch) -> torch.Tensor:
        log_py = -math.log(NUM_CLASSES)
        # unlabelled: y enumerated, ten one-hot classes of shape (C, 1, C) against x's (M, ...)
        xu = unlabelled.x
        log_qy = F.log_softmax(self.classifier(xu), dim=-1)  # (M, C)
        classes = torch.eye(NUM_CLASSES, device=xu.device).unsqueeze(1)
        per_class = self._z_terms(xu, classes) + log_py  # (C, M)
        qy = log_qy.exp()
        elbo_u = (qy * per_class.T).sum(-1) - (qy * log_qy).sum(-1)
        # labelled: y observed, plus the classification term
        xl, yl = labelled.x, labelled.y
        log_qy_l = F.log_softmax(self.classifier(xl), dim=-1).gather(1, yl[:, None])[:, 0]
        elbo_l = self._z_terms(xl, F.one_hot(yl, NUM_CLASSES).float()) + log_py \
            + self.aux_weight * log_qy_l
        return -(unlabelled.num_data / len(xu) * elbo_u.sum()
                 + labelled.num_data / len(xl) * elbo_l.sum())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "mnist"])
    p.add_argument("--data-dir", default=None, help="the dataset's folder (default: the "
                   "runner's search path)")
    p.add_argument("--eval-k", type=int, default=5000, help="importance samples of the "
                   "log p(x) evaluation (0: skip it)")
    p.add_argument("--eval-images", type=int, default=100, help="test images it evaluates")
    p.add_argument("--eval-rounds", type=int, default=3)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = ExperimentConfig(dataset=a.dataset, device=a.device, data_dir=a.data_dir)
    exp = Experiment(cfg, ROOT / "runs" / "unused", progress=False)  # nothing is written there
    data = exp.semi_data(100, seed=0)
    torch.manual_seed(0)
    settings = Settings(batch_size=a.batch_size, alpha=1.0, labelled_weight="balanced",
                        z_kl_start=10.0, z_kl_epochs=10.0)
    method = METHODS.get("m2")(data, settings)
    module, engine = method.module, method.optimizer
    aux_weight = module.posteriors["y"].aux_weight
    hand = HandWrittenM2(module, aux_weight)
    weight = engine.objective.kl_weight.weight  # the schedule's weight at the first step
    hand.z_weight = weight
    hand_optimizer = build_optimizer("adam", hand.parameters(), settings.lr, foreach=True)
    batches = list(itertools.islice(
        paired_batches(data.unlabelled, method.labelled_stream, a.batch_size), a.steps))

    # the same objective: from the same weights and random stream (z drawn in the same order,
    # unlabelled then labelled) the two losses and their gradients agree to float precision
    unlabelled, labelled = batches[0]
    results = {}
    for name, net, loss_of in (("aevb", module, engine._loss), ("hand", hand, hand.loss)):
        net.zero_grad(set_to_none=True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            loss = loss_of(unlabelled, labelled)
        loss.backward()
        results[name] = (float(loss.detach()), torch.cat([q.grad.flatten() for q in net.parameters()]))
    (ours, g_ours), (theirs, g_theirs) = results["aevb"], results["hand"]
    grad_gap = float((g_ours - g_theirs).norm() / g_ours.norm())
    print(f"the same weights and draws: aevb loss {ours:.6g}, hand-written {theirs:.6g} "
          f"(relative gap {abs(ours - theirs) / abs(ours):.1e}; gradients {grad_gap:.1e}); "
          f"z-KL weight {weight:g}, aux weight {aux_weight:g}")
    if abs(ours - theirs) > 1e-5 * abs(ours) or grad_gap > 1e-4:
        raise SystemExit("the hand-written M2 does not compute aevb's objective; fix it before "
                         "timing")

    def aevb_trial() -> None:
        for unlabelled, labelled in batches:
            engine.step(unlabelled, labelled)

    def hand_trial() -> None:
        for unlabelled, labelled in batches:
            hand_optimizer.zero_grad(set_to_none=True)
            hand.loss(unlabelled, labelled).backward()
            hand_optimizer.step()

    loops = {"aevb (fast engine, SyncFreeTraceEnum_ELBO)": aevb_trial, "hand-written PyTorch": hand_trial}

    def timed(loop) -> float:
        t = time.perf_counter()
        with engine.epoch():
            loop()
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
        return (time.perf_counter() - t) / a.steps * 1e3

    names = list(loops)
    times, ratios = alternate({name: (lambda loop=loop: timed(loop)) for name, loop in loops.items()},
                              a.rounds, (names[0], names[1]))
    print(f"M2 training step on {a.dataset}, batch {a.batch_size} unlabelled + {a.batch_size} "
          f"labelled, {torch.get_num_threads()} threads on {a.device}, median of {a.rounds} "
          f"rounds x {a.steps} steps")
    print(table(times, ratios, ("loop", "ms/step"), "ratio aevb / hand-written"))
    if a.eval_k:
        compare_evaluation(module, hand, data.test, a)


def compare_evaluation(module, hand: HandWrittenM2, test, a) -> None:
    """M2's importance-sampled log p(x) (``aevb evaluate``'s defaults: chunks of 100 samples,
    batches of 20 images) in aevb against the hand-written estimator, on the same images: first
    a paired check that both estimate the same quantity (independent draws, so the per-image
    differences must average to zero within their standard error), then alternating rounds."""
    from aevb.inference import Split
    from aevb.inference.evaluation.likelihood import importance_sampled

    n = min(a.eval_images, len(test))
    x = torch.bernoulli(test.x[:n]) if test.dynamic else test.x[:n]  # one binarization for both
    split = Split(x, None if test.y is None else test.y[:n])
    chunk, batch_size = min(100, a.eval_k), 20
    ours = importance_sampled(module, split, a.eval_k, chunk, batch_size)["log_likelihood"]
    theirs = hand.log_likelihood(split, a.eval_k, chunk, batch_size)
    diff = ours - theirs
    stderr = float(diff.std() / math.sqrt(len(diff))) if len(diff) > 1 else 0.0
    print(f"\nlog p(x) of M2 on {len(split)} test images, k={a.eval_k}: aevb "
          f"{float(ours.mean()):.3f}, hand-written {float(theirs.mean()):.3f} nats (paired "
          f"difference {float(diff.mean()):+.3f} ± {stderr:.3f} s.e.)")
    if abs(float(diff.mean())) > 4 * stderr + 1e-3:
        raise SystemExit("the hand-written evaluation does not estimate aevb's log p(x)")

    def timed(evaluate) -> float:
        t = time.perf_counter()
        evaluate()
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
        return len(split) / (time.perf_counter() - t)

    trials = {
        "aevb (importance_sampled, Pyro traces)":
            lambda: timed(lambda: importance_sampled(module, split, a.eval_k, chunk, batch_size)),
        "hand-written PyTorch":
            lambda: timed(lambda: hand.log_likelihood(split, a.eval_k, chunk, batch_size)),
    }
    names = list(trials)
    rates, ratios = alternate(trials, a.eval_rounds, (names[1], names[0]))
    print(f"M2 log p(x), k={a.eval_k} in chunks of {chunk}, batches of {batch_size} images, "
          f"{torch.get_num_threads()} threads on {a.device}, median of {a.eval_rounds} rounds")
    print(table(rates, ratios, ("evaluation", "images/s"), "ratio of times aevb / hand-written"))


if __name__ == "__main__":
    main()
