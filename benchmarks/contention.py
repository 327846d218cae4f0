"""Two aevb processes on one machine: each one's time beside the other against its time alone.

Jobs (each a fresh process of this script, through aevb's own code paths):

* ``train``: the 784-400-z50 VAE's training step (``elbo``, batch 128, the ``fast`` engine) on
  dynamically-binarized Fashion-MNIST;
* ``m2``: the semi-supervised runner's M2 step (100 labels, batch 128 + 128);
* ``eval``: the k = ``--eval-k`` importance-sampled log-likelihood of 20-image batches
  (:func:`~aevb.inference.evaluation.likelihood.importance_sampled`).

For a pair "A beside B", B starts first and repeats its work until it is stopped; once B says it
is warm, A runs its warm-up and then ``--units`` timed units (steps, or evaluation batches), and
B is stopped. "A alone" is the same run of A with nothing beside it. Both are repeated
``--rounds`` times, alternating, and the table gives the medians and their ratio, with aevb's
thread budget (:mod:`aevb.inference.threads`, on by default) and without it
(``AEVB_THREAD_BUDGET=0``: every process takes all the cores, torch's default).

    python benchmarks/contention.py                      # all pairs, budget on and off (~15 min)
    python benchmarks/contention.py --pairs eval:m2 --budgets on
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ["train:train", "train:eval", "eval:train", "eval:eval", "eval:m2", "m2:eval"]


def job(name: str, units: int, loop: bool, args) -> None:
    """One job's process: warm up, then time ``units`` units (or repeat until killed)."""
    import itertools

    import torch

    from aevb.inference.cpu import prepare

    prepare(torch.device("cpu"))  # what `aevb train` and `aevb evaluate` do on the CPU
    if name == "eval":
        from aevb.inference import Split
        from aevb.inference.evaluation.likelihood import importance_sampled
        from aevb.models import VAE

        torch.manual_seed(0)
        model = VAE((1, 28, 28)).eval()
        x = torch.bernoulli(torch.rand(20, 1, 28, 28))

        def unit():
            importance_sampled(model, Split(x), args.eval_k, batch_size=20)
    else:
        from aevb.experiments.semisupervised import Experiment, ExperimentConfig

        exp = Experiment(ExperimentConfig(data_dir=args.data_dir), ROOT / "runs" / "unused",
                         progress=False)
        if name == "m2":
            from aevb.inference.semisupervised import METHODS, Settings, paired_batches

            data = exp.semi_data(100, seed=0)
            torch.manual_seed(0)
            method = METHODS.get("m2")(data, Settings())
            batches = itertools.cycle(list(itertools.islice(
                paired_batches(data.unlabelled, method.labelled_stream, 128), 20)))

            def unit():
                method.optimizer.step(*next(batches))
        else:
            from aevb.inference.objectives import build_objective
            from aevb.inference.training.engines import build_engine
            from aevb.models import VAE

            train = exp.data().train
            torch.manual_seed(0)
            model = VAE((1, 28, 28))
            engine = build_engine("fast", model, build_objective("elbo"), "adam", 1e-3)
            batches = itertools.cycle(list(itertools.islice(train.batches(128, scaled=True),
                                                            50)))

            def unit():
                engine.step(next(batches))

    for _ in range(3):
        unit()
    if loop:
        print("ready", flush=True)
        while True:
            unit()
    start = time.perf_counter()
    for _ in range(units):
        unit()
    print(f"{(time.perf_counter() - start) / units * 1e3:.3f}", flush=True)


def child(name: str, args, budget: str, loop: bool = False) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    env["AEVB_THREAD_BUDGET"] = "1" if budget == "on" else "0"
    cmd = [sys.executable, __file__, "--job", name, "--units", str(args.units[name]),
           "--eval-k", str(args.eval_k)] + (["--loop"] if loop else []) \
        + (["--data-dir", args.data_dir] if args.data_dir else [])
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)


def timed(name: str, partner: str | None, args, budget: str) -> float:
    beside = None
    if partner is not None:
        beside = child(partner, args, budget, loop=True)
        assert beside.stdout is not None
        if beside.stdout.readline().strip() != "ready":
            raise SystemExit(f"the {partner} job did not start")
    try:
        measured = child(name, args, budget)
        out, _ = measured.communicate()
        if measured.returncode:
            raise SystemExit(f"the {name} job failed")
        return float(out.strip().splitlines()[-1])
    finally:
        if beside is not None:
            beside.kill()
            beside.wait()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", default=",".join(PAIRS), help="MEASURED:BESIDE, comma-separated")
    p.add_argument("--budgets", default="on,off")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--eval-k", type=int, default=5000)
    p.add_argument("--train-units", type=int, default=200, help="timed training steps")
    p.add_argument("--m2-units", type=int, default=40, help="timed M2 steps")
    p.add_argument("--eval-units", type=int, default=3, help="timed 20-image batches")
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST's folder")
    p.add_argument("--job", help=argparse.SUPPRESS)
    p.add_argument("--units", type=int, help=argparse.SUPPRESS)
    p.add_argument("--loop", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.job:
        return job(args.job, args.units, args.loop, args)
    args.units = {"train": args.train_units, "m2": args.m2_units, "eval": args.eval_units}
    pairs = [tuple(pair.split(":")) for pair in args.pairs.split(",")]
    budgets = args.budgets.split(",")
    unit_name = {"train": "ms/step", "m2": "ms/step", "eval": f"ms per 20 images, k={args.eval_k}"}
    print(f"{os.cpu_count()} CPUs; medians of {args.rounds} rounds; alone and beside "
          f"alternate\n", flush=True)
    print("| measured | beside | thread budget | alone | beside the other | ratio | unit |\n"
          "|---|---|---|---|---|---|---|")
    worst: dict[str, float] = {}
    for measured, partner in pairs:
        for budget in budgets:
            alone, beside = [], []
            for _ in range(args.rounds):
                alone.append(timed(measured, None, args, budget))
                beside.append(timed(measured, partner, args, budget))
            a, b = statistics.median(alone), statistics.median(beside)
            worst[budget] = max(worst.get(budget, 0.0), b / a)
            print(f"| {measured} | {partner} | {budget} | {a:.1f} | {b:.1f} | {b / a:.2f}x | "
                  f"{unit_name[measured]} |", flush=True)
    print("\nworst ratio: " + ", ".join(f"budget {k} {v:.2f}x" for k, v in worst.items()))


if __name__ == "__main__":
    main()
