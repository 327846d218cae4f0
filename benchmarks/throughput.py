"""Training and evaluation throughput: aevb's engines against hand-written PyTorch, side by side.

**Training.** For each objective and batch size, three loops train the same 784-400-z50 MLP VAE
(tanh, Bernoulli likelihood; identical initial weights) on the same dynamically-binarized
Fashion-MNIST training images with the same optimizer (Adam, foreach kernels), in one process:

* ``aevb fast``: the default engine (``differentiable_loss`` + torch optimizer, validation off in
  the loop, loss kept on the device);
* ``aevb svi``: Pyro's reference path (``SVI`` + ``PyroOptim``, a host read per step);
* ``hand-written``: the same estimator in plain PyTorch (``elbo``: one reparameterized sample, KL
  sampled; ``meanfield``: KL analytic; ``iwae``: the k-sample bound), scaled by N/M like the plate.

Trials of ``--steps`` steps are interleaved in rounds (each loop once per round, the order rotating
from round to round) so that all loops see the same machine state; the table gives the median
ms/step of each loop and, as the ratios to the hand-written loop, the median over rounds of the
within-round ratio.

**Evaluation.** The importance-sampled log-likelihood (k = ``--eval-k``, default 5000) of
``aevb evaluate`` over ``--eval-images`` test images (default: the full 10k): images/s, the
arithmetic rate of its matrix products (counted from the network shapes) against a plain
``torch.mm`` of large square matrices measured in the same script right after each evaluation
(so both see the same machine state), and the peak memory of a fresh process doing only the
evaluation (peak RSS on CPU, ``max_memory_allocated`` on GPU), for several chunk sizes to show it
is set by the chunk, not by k.

    python benchmarks/throughput.py                    # the full benchmark (about 15 min on 2 CPU threads)
    python benchmarks/throughput.py --objectives elbo --batch-sizes 128 --eval-images 1000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from aevb.builder import build_model
from aevb.config import load_config
from aevb.data import load_data
from aevb.inference import Split
from aevb.inference.cpu import prepare
from aevb.inference.evaluation.likelihood import importance_sampled
from aevb.inference.objectives import build_objective
from aevb.inference.training import resolve_device
from aevb.inference.training.engines import build_engine
from aevb.inference.training.optim import build_optimizer

ROOT = Path(__file__).resolve().parents[1]

HIDDEN, Z = 400, 50


# -- the hand-written reference ---------------------------------------------------------------
def hand_loss(model, x: torch.Tensor, num_data: int, objective: str, k: int) -> torch.Tensor:
    """The N/M-scaled negative objective of one batch in plain PyTorch."""
    loc, raw = model.encoder(x).chunk(2, dim=-1)
    scale = F.softplus(raw) + 1e-5
    shape = (k, *loc.shape) if objective == "iwae" else loc.shape
    z = loc + scale * torch.randn(shape, device=x.device)
    logits = model.decoder(z.reshape(-1, Z)).reshape(*shape[:-1], -1)
    target = x.flatten(1).expand_as(logits)
    log_px = -F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1)
    if objective == "meanfield":
        bound = log_px - 0.5 * (loc ** 2 + scale ** 2 - 1 - 2 * scale.log()).sum(-1)
    else:
        log_q = (-0.5 * ((z - loc) / scale) ** 2 - scale.log()).sum(-1)
        log_p = (-0.5 * z ** 2).sum(-1)  # the 2*pi constants cancel between p(z) and q(z|x)
        log_w = log_px + log_p - log_q
        bound = torch.logsumexp(log_w, 0) - math.log(k) if objective == "iwae" else log_w
    return -(num_data / len(x)) * bound.sum()


class HandWritten:
    def __init__(self, model, objective: str, k: int, lr: float):
        self.model, self.objective, self.k = model, objective, k
        self.optimizer = build_optimizer("adam", model.parameters(), lr, foreach=True)

    def step(self, batch) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss = hand_loss(self.model, batch.x, batch.num_data, self.objective, self.k)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def epoch(self):
        return contextlib.nullcontext()


# -- timing -----------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batches_forever(split: Split, batch_size: int):
    while True:
        yield from split.batches(batch_size, shuffle=True, scaled=True)


def timed_steps(loop, stream, steps: int, device: torch.device) -> float:
    """Seconds for ``steps`` steps of ``loop`` (the running loss stays on the device)."""
    total = torch.zeros((), device=device)
    with loop.epoch():
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            total += loop.step(next(stream)).to(device)
        sync(device)
        seconds = time.perf_counter() - start
    if not math.isfinite(float(total)):
        raise FloatingPointError("a training loop diverged")
    return seconds


def engines_for(device: torch.device) -> tuple[str, ...]:
    """aevb's engines measured on ``device``: ``graphed`` (CUDA graphs) on CUDA only."""
    return ("fast", "svi", "graphed") if device.type == "cuda" else ("fast", "svi")


def train_table(args, data, device) -> list[dict]:
    rows = []
    cfg = load_config(str(ROOT / "configs" / "vae_fashion.yaml"),
                      [f"model.hidden_sizes=[{HIDDEN}]", f"model.z_dim={Z}"])
    for objective in args.objectives:
        name, k = (objective.split(":") + ["5"])[:2] if objective.startswith("iwae") \
            else (objective, "1")
        k = int(k)
        for batch_size in args.batch_sizes:
            loops = {}
            for engine in (*engines_for(device), "hand"):
                torch.manual_seed(0)
                model = build_model(cfg.model, (1, 28, 28)).to(device)
                if engine == "hand":
                    loops[engine] = HandWritten(model, name, k, cfg.optim.lr)
                else:
                    loops[engine] = build_engine(engine, model, build_objective(name, k), "adam",
                                                 cfg.optim.lr)
            stream = batches_forever(data.train, batch_size)
            for loop in loops.values():  # warm-up: allocator, Pyro's plate-nesting guess, graphs
                timed_steps(loop, stream, 10, device)
            times: dict[str, list[float]] = {e: [] for e in loops}
            order = list(loops)
            for r in range(args.repeats):  # one round: each loop once, the order rotating
                shift = r % len(order)
                for engine in order[shift:] + order[:shift]:
                    times[engine].append(timed_steps(loops[engine], stream, args.steps, device))
            ms = {e: 1000 * statistics.median(t) / args.steps for e, t in times.items()}
            row = {"objective": name if name != "iwae" else f"iwae k={k}", "batch": batch_size,
                   "ms": ms, "ratio": {e: paired_ratio(times[e], times["hand"])
                                       for e in loops if e != "hand"}}
            rows.append(row)
            print(f"{row['objective']:>10} batch {batch_size:>5}: "
                  + ", ".join(f"{e} {v:.2f} ms" for e, v in ms.items()) + "/step", flush=True)
    return rows


def paired_ratio(ours: list[float], reference: list[float]) -> float:
    """The median over rounds of each round's time ratio: a round's trials run back to back, so
    the machine's slow drifts (frequency, other tenants) cancel within the pair."""
    return statistics.median(a / b for a, b in zip(ours, reference, strict=True))


# -- evaluation -------------------------------------------------------------------------------
def matmul_gflops(device: torch.device, n: int = 2048, repeats: int = 10) -> float:
    """Dense float32 matmul throughput of this machine (square n x n, best of ``repeats``)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = math.inf
    for _ in range(repeats + 2):
        sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def bare_products_gflops(device: torch.device, rows: int, repeats: int = 10) -> float:
    """The decoder's matrix products alone (bias + matmul, no activation, no densities) at the
    evaluation's shapes: ``rows`` = samples x images of one chunk. The evaluation cannot beat
    this rate; the ratio shows what the rest of the evaluation costs."""
    z = torch.randn(rows, Z, device=device)
    w1, b1 = torch.randn(Z, HIDDEN, device=device), torch.randn(HIDDEN, device=device)
    w2, b2 = torch.randn(HIDDEN, 784, device=device), torch.randn(784, device=device)
    best = math.inf
    for _ in range(repeats + 2):
        sync(device)
        start = time.perf_counter()
        torch.addmm(b2, torch.addmm(b1, z, w1), w2)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2.0 * rows * (Z * HIDDEN + HIDDEN * 784) / best / 1e9


def eval_flops(num_images: int, k: int) -> float:
    """Multiply-adds x 2 of the evaluation: the encoder once per image, the decoder per sample."""
    encoder = 784 * HIDDEN + HIDDEN * 2 * Z
    decoder = Z * HIDDEN + HIDDEN * 784
    return 2.0 * num_images * (encoder + k * decoder)


def rss_bytes(field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) of this process, Linux only;
    elsewhere the process's lifetime peak from ``getrusage``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)


def eval_child(args) -> None:
    """Run only the evaluation (in a fresh process, so its peak memory is its own)."""
    device = resolve_device(args.device)
    prepare(device)  # as `aevb evaluate` does: on the CPU, its share of the cores and a kept heap
    cfg = load_config(str(ROOT / "configs" / "vae_fashion.yaml"),
                      [f"model.hidden_sizes=[{HIDDEN}]", f"model.z_dim={Z}",
                       f"data.test_size={args.eval_images}"]
                      + ([f"data.data_dir={args.data_dir}"] if args.data_dir else []))
    data = load_data(cfg.data, device)
    torch.manual_seed(0)
    model = build_model(cfg.model, (1, 28, 28)).to(device).eval()
    warm = Split(data.test.x[:10], data.test.y[:10])
    importance_sampled(model, warm, min(args.eval_k, args.sample_chunk), args.sample_chunk,
                       args.eval_batch)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        reset_peak_rss()  # the peak of loading the data set is not the evaluation's
        before = rss_bytes("VmRSS")
    start = time.perf_counter()
    est = importance_sampled(model, data.test, args.eval_k, args.sample_chunk, args.eval_batch)
    sync(device)
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else rss_bytes("VmHWM"))
    print(json.dumps({"seconds": seconds, "images": len(data.test), "peak_bytes": peak,
                      "added_bytes": max(0, peak - before),
                      "memory": "GPU max_memory_allocated" if device.type == "cuda"
                      else "peak RSS", "log_likelihood": float(est["log_likelihood"].mean())}))


def eval_table(args, device) -> list[dict]:
    rows = []
    for chunk, batch in args.eval_chunks:
        cmd = [sys.executable, __file__, "--eval-child", "--device", str(device),
               "--eval-images", str(args.eval_images), "--eval-k", str(args.eval_k),
               "--sample-chunk", str(chunk), "--eval-batch", str(batch)]
        if args.data_dir:
            cmd += ["--data-dir", args.data_dir]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        gflops = eval_flops(r["images"], args.eval_k) / r["seconds"] / 1e9
        # the references right after the evaluation, so that they see the same machine state
        peak_mm = matmul_gflops(device)
        bare = bare_products_gflops(device, chunk * batch)
        rows.append({"chunk": f"{chunk} samples x {batch} images", "images": r["images"],
                     "k": args.eval_k, "seconds": r["seconds"],
                     "images_per_s": r["images"] / r["seconds"], "gflops": gflops,
                     "matmul_gflops": peak_mm, "fraction": gflops / peak_mm,
                     "bare_gflops": bare, "fraction_of_bare": gflops / bare,
                     "peak_mib": r["peak_bytes"] / 2 ** 20,
                     "added_mib": r["added_bytes"] / 2 ** 20, "memory": r["memory"]})
        print(f"evaluation chunk {chunk}: {rows[-1]['images_per_s']:.1f} images/s, "
              f"{gflops:.1f} GFLOP/s of {peak_mm:.1f}, peak {rows[-1]['peak_mib']:.0f} MiB "
              f"(+{rows[-1]['added_mib']:.0f} MiB during the evaluation)",
              flush=True)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--objectives", type=lambda s: s.split(","), default=["elbo", "meanfield",
                                                                           "iwae:5"],
                   help="comma-separated; iwae:K for k samples")
    p.add_argument("--batch-sizes", type=lambda s: [int(v) for v in s.split(",")],
                   default=[128, 1024])
    p.add_argument("--steps", type=int, default=100, help="steps per timed trial")
    p.add_argument("--repeats", type=int, default=5, help="interleaved trials per loop")
    p.add_argument("--train-size", type=int, default=None, help="first n training images")
    p.add_argument("--eval-images", type=int, default=10000, help="test images (10000 = all)")
    p.add_argument("--eval-k", type=int, default=5000)
    p.add_argument("--eval-chunks", default=[(100, 20), (250, 20), (500, 100)],
                   type=lambda s: [tuple(int(v) for v in c.split("x")) for c in s.split(",")],
                   help="SAMPLESxIMAGES per chunk, comma-separated (default: aevb's 100x20, "
                        "the former default 250x20 and a 25x larger 500x100)")
    p.add_argument("--sample-chunk", type=int, default=100, help=argparse.SUPPRESS)
    p.add_argument("--eval-batch", type=int, default=20, help=argparse.SUPPRESS)
    p.add_argument("--no-eval", action="store_true")
    p.add_argument("--no-train", action="store_true", help="the evaluation figures only")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--eval-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.eval_child:
        return eval_child(args)

    device = resolve_device(args.device)
    overrides = [f"device={args.device}"] + ([f"data.train_size={args.train_size}"]
                                             if args.train_size else [])
    if args.data_dir:
        overrides.append(f"data.data_dir={args.data_dir}")
    cfg = load_config(str(ROOT / "configs" / "vae_fashion.yaml"), overrides)
    data = load_data(cfg.data, device)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"CPU, {torch.get_num_threads()} threads")
    print(f"{cfg.data.name}, {len(data.train)} training images, dynamic binarization, "
          f"784-{HIDDEN}-z{Z} VAE, Adam (foreach), {where}, torch {torch.__version__}; "
          f"{args.repeats} rounds of interleaved trials of {args.steps} steps; ms/step: median "
          f"per loop; ratios: median over rounds of the within-round ratio\n", flush=True)
    if not args.no_train:
        train_report(train_table(args, data, device))
    if args.no_eval:
        return
    eval_report(args, device)


def train_report(rows: list[dict]) -> None:
    engines = list(rows[0]["ratio"])
    print("\n| objective | batch | " + " | ".join(f"aevb {e} ms/step" for e in engines)
          + " | hand-written ms/step | " + " | ".join(f"ratio {e} / hand" for e in engines)
          + " |\n|---|---|" + "---|" * (2 * len(engines) + 1))
    for r in rows:
        print(f"| {r['objective']} | {r['batch']} | "
              + " | ".join(f"{r['ms'][e]:.2f}" for e in engines) + f" | {r['ms']['hand']:.2f} | "
              + " | ".join(f"{r['ratio'][e]:.2f}x" for e in engines) + " |")
    for engine in [e for e in engines if e != "svi"]:
        worst = max(rows, key=lambda r: r["ratio"][engine])
        print(f"ratio aevb {engine} / hand-written: {worst['ratio'][engine]:.2f}x at worst "
              f"({worst['objective']}, batch {worst['batch']})")


def eval_report(args, device) -> None:
    print(f"\nevaluation: IS log-likelihood, k = {args.eval_k}, {args.eval_images} test images")
    erows = eval_table(args, device)
    print("\n| chunk | images | images/s | seconds | matmul GFLOP/s | torch.mm GFLOP/s "
          "| fraction | same products bare, GFLOP/s | fraction of bare "
          "| peak memory of the evaluation | of which the evaluation's own |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|")
    for r in erows:
        print(f"| {r['chunk']} | {r['images']} | {r['images_per_s']:.1f} | {r['seconds']:.1f} | "
              f"{r['gflops']:.1f} | {r['matmul_gflops']:.1f} | {100 * r['fraction']:.0f}% | "
              f"{r['bare_gflops']:.1f} | {100 * r['fraction_of_bare']:.0f}% | "
              f"{r['peak_mib']:.0f} MiB ({r['memory']}) | {r['added_mib']:.0f} MiB |")


if __name__ == "__main__":
    main()
