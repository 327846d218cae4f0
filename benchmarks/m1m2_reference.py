"""Kingma et al.'s M1+M2 training, re-expressed in plain PyTorch: is M1+M2's gap aevb's or the recipe's?

aevb's M1+M2 on the released M1 with the authors' settings levels off at 86-87% test accuracy
at 100 labels (``docs/results/m2-mnist.md``), where Kingma et al. (2014, Table 1) report 96.67%.
This script is an independent check of that figure that uses none of aevb's models, objectives or
trainer, and no Pyro: it writes out what ``learn_yz_x_ss.py`` of ``dpkingma/nips14-ssl`` computes
(read, not imported; none of its code is copied) in a few tensors, so that its numbers tell
whether the gap lies in how aevb trains M2 or in the recipe itself:

- the features: the released M1's q(z1|x) (``m1m2_released_m1.ReleasedEncoder``) of the
  grey-level images, on the dimensions whose mean varies (sd > 0.1); every step draws a fresh
  z1 ~ q(z1|x) for each training image; validation and test images are classified from the mean;
- M2 (``VAE_YZ_X``): q(z2|z1, y) and p(z1|y, z2), one hidden layer of softplus units, Gaussian
  p(z1|y, z2) with a learned, unfloored log-variance, analytic KL terms, uniform p(y);
  q(y|z1) an MLP of one softplus hidden layer (``MLP_Categorical``);
- the objective (eq. 9): the sum of the labelled bounds L(x, y) + α·(N/N_l)·log q(y|x) and the
  unlabelled bounds U(x) = Σ_y q(y|x)(L(x, y) − log q(y|x)), each batch scaled up to the data
  set, plus an N(0, 1) prior log-density on every weight, divided by −N;
- the data cut once into ``n_minibatches`` fixed parts of n_l/n_minibatches labelled and
  n_u/n_minibatches unlabelled images, visited in the same order every pass;
- weights N(0, 10⁻⁶), Kingma's Adam of the time (step 3e-4, β = (0.9, 0.999), no bias
  correction, no ε);
- ``run_2layer_ssl.py``: 300 hidden units and 100 minibatches at 100 labels, 500 and 200
  otherwise, α = 0.1, 3000 passes.

Each pass writes a row (training objective, validation and test error) to ``log.csv`` and the
state to ``state.pt``; the same command goes on from there.

    git clone https://github.com/dpkingma/nips14-ssl /tmp/nips14-ssl
    python benchmarks/m1m2_reference.py --nips14-ssl /tmp/nips14-ssl --labels 100 --seed 0 \\
      --passes 3000 --data-dir ../shared/data/mnist --out benchmarks/results/m1m2-reference
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from m1m2_released_m1 import released_encoder  # the sibling script

from aevb.experiments.semisupervised import Experiment, ExperimentConfig

LOG2PI = math.log(2 * math.pi)
FIELDS = ("pass", "objective", "valid_error", "test_error", "seconds")


def hyperparameters(labels: int) -> tuple[int, int]:
    """Hidden units and minibatches of ``run_2layer_ssl.py``."""
    return (300, 100) if labels == 100 else (500, 200)


def init_params(n_x: int, n_y: int, n_hidden: int, n_z: int, sd: float,
                gen: torch.Generator) -> dict[str, torch.Tensor]:
    """``VAE_YZ_X.init_w`` and ``MLP_Categorical.init_w``: N(0, sd²) except the log-variance
    weights and the output biases (zero); names ``q_`` (q(z2|z1,y)), ``p_`` (p(z1|y,z2)) and
    ``c_`` (q(y|z1))."""
    def rand(*shape):
        return sd * torch.randn(*shape, generator=gen)
    zeros = torch.zeros
    return {
        "q_w0x": rand(n_hidden, n_x), "q_w0y": rand(n_hidden, n_y), "q_b0": rand(n_hidden, 1),
        "q_mean_w": rand(n_z, n_hidden), "q_mean_b": rand(n_z, 1),
        "q_logvar_w": zeros(n_z, n_hidden), "q_logvar_b": zeros(n_z, 1),
        "p_w0y": rand(n_hidden, n_y), "p_w0z": rand(n_hidden, n_z), "p_b0": rand(n_hidden, 1),
        "p_out_w": rand(n_x, n_hidden), "p_out_b": zeros(n_x, 1),
        "p_out_logvar_w": rand(n_x, n_hidden), "p_out_logvar_b": zeros(n_x, 1),
        "c_w0": rand(n_hidden, n_x), "c_b0": zeros(n_hidden, 1),
        "c_w1": rand(n_y, n_hidden), "c_b1": zeros(n_y, 1),
    }


# the weights under the N(0, 1) prior: every weight of q(z2|z1,y) and p(z1|y,z2) (not their
# biases), every parameter of q(y|z1)
PRIOR = ("q_w0x", "q_w0y", "q_mean_w", "q_logvar_w", "p_w0y", "p_w0z", "p_out_w",
         "p_out_logvar_w", "c_w0", "c_b0", "c_w1", "c_b1")


def log_qy(p: dict, x: torch.Tensor) -> torch.Tensor:
    """log q(y|z1) for codes ``x`` of shape ``(n_x, n)``: ``(n_y, n)``."""
    return torch.log_softmax(p["c_w1"] @ F.softplus(p["c_w0"] @ x + p["c_b0"]) + p["c_b1"], 0)


def bound(p: dict, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor,
          analytic_kl: bool = True) -> torch.Tensor:
    """L(x, y) = log p(y) + E_q[log p(x|y,z)] − KL(q(z|x,y) || p(z)), one sample of z, per
    column (Kingma et al. 2014, eq. 6; ``VAE_YZ_X.factors``). The KL is analytic (Kingma et
    al.'s code), or with ``analytic_kl=False`` log q(z|x,y) − log p(z) at the sampled z (what
    Pyro's ``TraceEnum_ELBO`` estimates, SGVB estimator A of Kingma & Welling 2014, eq. 6)."""
    h = F.softplus(p["q_w0x"] @ x + p["q_w0y"] @ y + p["q_b0"])
    mean, logvar = p["q_mean_w"] @ h + p["q_mean_b"], p["q_logvar_w"] @ h + p["q_logvar_b"]
    z = mean + (0.5 * logvar).exp() * eps
    h = F.softplus(p["p_w0y"] @ y + p["p_w0z"] @ z + p["p_b0"])
    x_mean, x_logvar = p["p_out_w"] @ h + p["p_out_b"], p["p_out_logvar_w"] @ h + p["p_out_logvar_b"]
    log_px = (-0.5 * (LOG2PI + x_logvar + (x - x_mean) ** 2 / x_logvar.exp())).sum(0)
    log_py = -math.log(y.shape[0])
    if analytic_kl:
        kl = 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).sum(0)
    else:
        kl = 0.5 * (z ** 2 - eps ** 2 - logvar).sum(0)
    return log_px + log_py - kl


def objective(p: dict, x_l, y_l, x_u, alpha: float, n_l: int, n_u: int, n_minibatches: int,
              gen: torch.Generator, analytic_kl: bool = True) -> torch.Tensor:
    """The minibatch's estimate of −(J^α + log p(θ)) / N (``learn_yz_x_ss.optim_vae_ss_adam``)."""
    n_y, n_z = y_l.shape[0], p["q_mean_b"].shape[0]
    n_tot = n_l + n_u
    logq_l = log_qy(p, x_l)
    labelled = (bound(p, x_l, y_l, torch.randn(n_z, x_l.shape[1], generator=gen), analytic_kl)
                + alpha * n_tot / n_l * (logq_l * y_l).sum(0))
    logq_u = log_qy(p, x_u)
    b = x_u.shape[1]
    ys = torch.eye(n_y).repeat_interleave(b, 1)  # every class for every image
    inner = bound(p, x_u.repeat(1, n_y), ys, torch.randn(n_z, n_y * b, generator=gen),
                  analytic_kl)
    unlabelled = (logq_u.exp() * (inner.reshape(n_y, b) - logq_u)).sum(0)
    log_prior = sum((-0.5 * (LOG2PI + p[k] ** 2)).sum() for k in PRIOR)
    share = n_l / n_minibatches / x_l.shape[1]  # 1 unless every step carries every labelled code
    return -((labelled.sum() * share + unlabelled.sum()) * n_minibatches + log_prior) / n_tot


class KingmaAdam:
    """The Adam of ``nips14-ssl/adam.py``: m ← m + (1−β1)(g − m), v ← v + (1−β2)(g² − v),
    θ ← θ − α m / √v, without bias correction or ε (a zero v leaves θ as it is)."""

    def __init__(self, params: dict, lr: float = 3e-4, beta1: float = 0.9, beta2: float = 0.999):
        self.params, self.lr, self.beta1, self.beta2 = params, lr, beta1, beta2
        self.m = {k: torch.zeros_like(v) for k, v in params.items()}
        self.v = {k: torch.zeros_like(v) for k, v in params.items()}

    @torch.no_grad()
    def step(self) -> None:
        for k, theta in self.params.items():
            g = theta.grad
            self.m[k] += (1 - self.beta1) * (g - self.m[k])
            self.v[k] += (1 - self.beta2) * (g * g - self.v[k])
            theta -= self.lr * torch.where(self.v[k] > 0, self.m[k] / self.v[k].sqrt(), 0.0)
            theta.grad = None


def columns(t: torch.Tensor) -> torch.Tensor:
    return t.T.contiguous()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nips14-ssl", type=Path, required=True,
                   help="a copy of github.com/dpkingma/nips14-ssl (its released M1 is read)")
    p.add_argument("--dataset", default="mnist", help="the released M1 was trained on MNIST")
    p.add_argument("--labels", type=int, default=100)
    p.add_argument("--seed", type=int, default=0, help="the labelled subset (aevb's) and the draws")
    p.add_argument("--passes", type=int, default=3000)
    p.add_argument("--alpha", type=float, default=0.1)
    p.add_argument("--kl", choices=("analytic", "sampled"), default="analytic",
                   help="KL(q(z|x,y) || p(z)) in closed form (Kingma et al.'s code) or at the "
                        "sampled z (Pyro's TraceEnum_ELBO, aevb's M2)")
    p.add_argument("--labelled-per-step", choices=("share", "all"), default="share",
                   help="each step's labelled codes: its n_l/n_minibatches share (Kingma et "
                        "al.'s code) or all n_l, weighted down to the same expected objective "
                        "(aevb's --labelled-batches every-step)")
    p.add_argument("--hidden", type=int, help="hidden units (default: run_2layer_ssl.py's)")
    p.add_argument("--minibatches", type=int, help="parts of the data (default: as --hidden)")
    p.add_argument("--train-size", type=int)
    p.add_argument("--test-size", type=int)
    p.add_argument("--data-dir")
    p.add_argument("--out", type=Path, default=Path("results/m1m2-reference"))
    args = p.parse_args(argv)
    encoder = released_encoder(p, args.nips14_ssl)
    n_hidden, n_minibatches = hyperparameters(args.labels)
    n_hidden, n_minibatches = args.hidden or n_hidden, args.minibatches or n_minibatches
    settings = {"dataset": args.dataset, "labels": args.labels, "seed": args.seed,
                "alpha": args.alpha, "kl": args.kl, "labelled_per_step": args.labelled_per_step,
                "hidden": n_hidden, "minibatches": n_minibatches,
                "train_size": args.train_size, "test_size": args.test_size}
    settings_path = args.out / "settings.json"  # --passes may grow; nothing else may change
    if settings_path.is_file() and (old := json.loads(settings_path.read_text())) != settings:
        diff = ", ".join(f"{k} ({old.get(k)} -> {v})" for k, v in settings.items()
                         if old.get(k) != v)
        p.error(f"--out {args.out} holds a run of other settings ({diff}); repeat its command "
                "or choose another --out")
    torch.set_num_threads(1)

    # the runner's split (the same labelled subset as aevb's rows), grey levels throughout
    cfg = ExperimentConfig(dataset=args.dataset, labels=[args.labels], seeds=1,
                           methods=["m1m2"], classify_from="grayscale", data_dir=args.data_dir,
                           train_size=args.train_size, test_size=args.test_size, device="cpu")
    data = Experiment(cfg, args.out, progress=False).semi_data(args.labels, args.seed)
    q_u = encoder.keep_varying(data.unlabelled.x)
    with torch.no_grad():
        q_l = encoder.posterior(data.labelled.x)
        valid, test = encoder.posterior(data.valid.x).mean, encoder.posterior(data.test.x).mean
    n_x, n_l, n_u = int(encoder.keep.sum()), len(q_l.mean), len(q_u.mean)
    if n_l % n_minibatches or n_u % n_minibatches:
        p.error(f"--labels {args.labels}: {n_l} labelled and {n_u} unlabelled images do not cut "
                f"into {n_minibatches} equal minibatches")
    print(f"released M1: {n_x} of {len(encoder.keep)} dimensions of z1 kept; {n_l} labelled, "
          f"{n_u} unlabelled; M2 of {n_hidden} hidden units, {n_minibatches} minibatches")

    gen = torch.Generator().manual_seed(args.seed)
    params = init_params(n_x, 10, n_hidden, 50, 1e-3, gen)
    for t in params.values():
        t.requires_grad_(True)
    adam = KingmaAdam(params)
    order_l, order_u = torch.randperm(n_l, generator=gen), torch.randperm(n_u, generator=gen)
    done = 0
    args.out.mkdir(parents=True, exist_ok=True)
    settings_path.write_text(json.dumps(settings, indent=2) + "\n")
    state_path, log_path = args.out / "state.pt", args.out / "log.csv"
    if state_path.is_file():
        state = torch.load(state_path, weights_only=True)
        with torch.no_grad():
            for k in params:
                params[k].copy_(state["params"][k])
        adam.m, adam.v = state["m"], state["v"]
        order_l, order_u, done = state["order_l"], state["order_u"], state["passes"]
        gen.set_state(state["generator"])
        print(f"resuming after pass {done}")
    if not log_path.is_file():
        with log_path.open("w", newline="") as f:
            csv.writer(f).writerow(FIELDS)

    mean_l, sd_l = columns(q_l.mean[order_l]), columns(q_l.stddev[order_l])
    mean_u, sd_u = columns(q_u.mean[order_u]), columns(q_u.stddev[order_u])
    y_l = columns(F.one_hot(data.labelled.y[order_l], 10).float())
    b_l, b_u = n_l // n_minibatches, n_u // n_minibatches

    def error(codes: torch.Tensor, y: torch.Tensor) -> float:
        with torch.no_grad():
            return (log_qy(params, columns(codes)).argmax(0) != y).float().mean().item()

    for pass_ in range(done + 1, args.passes + 1):
        start, total = time.perf_counter(), 0.0
        for i in range(n_minibatches):
            sl, su = slice(i * b_l, (i + 1) * b_l), slice(i * b_u, (i + 1) * b_u)
            if args.labelled_per_step == "all":
                sl = slice(None)
            x_l = mean_l[:, sl] + sd_l[:, sl] * torch.randn(mean_l[:, sl].shape, generator=gen)
            x_u = mean_u[:, su] + sd_u[:, su] * torch.randn(n_x, b_u, generator=gen)
            f = objective(params, x_l, y_l[:, sl], x_u, args.alpha, n_l, n_u, n_minibatches, gen,
                          args.kl == "analytic")
            f.backward()
            adam.step()
            total += f.item()
        row = (pass_, total / n_minibatches, error(valid, data.valid.y), error(test, data.test.y),
               time.perf_counter() - start)
        state = {"params": {k: v.detach() for k, v in params.items()}, "m": adam.m, "v": adam.v,
                 "order_l": order_l, "order_u": order_u, "passes": pass_,
                 "generator": gen.get_state()}
        with log_path.open("a", newline="") as f:  # a pass cut off before its state is saved
            csv.writer(f).writerow(row)           # is run again and logged twice, never lost
        torch.save(state, state_path.with_suffix(".tmp"))
        state_path.with_suffix(".tmp").replace(state_path)
        print(f"pass {pass_}: objective {row[1]:.3f}, valid error {100 * row[2]:.2f}%, "
              f"test error {100 * row[3]:.2f}% ({row[4]:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
