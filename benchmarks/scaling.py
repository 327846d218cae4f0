"""Data-parallel scaling: training throughput with R ranks against one rank, side by side.

For each number of ranks R (``--ranks``) and global batch size M (``--batch-sizes``) the script
launches ``torchrun --nproc-per-node R`` on itself; every rank trains the 784-400-z50 MLP VAE
(tanh, Bernoulli likelihood, ``elbo``, Adam) with aevb's fast engine under
DistributedDataParallel (gloo on CPU, NCCL on GPUs) on its shards of ``--steps`` global batches
of dynamically-binarized Fashion-MNIST, after a warm-up pass; rank 0 reports the global images/s.
Each configuration is repeated ``--repeats`` times, interleaved; the table gives the median,
and the scaling efficiency

    efficiency(R) = throughput(R ranks) / (R x throughput(1 rank)),

with ``--threads`` CPU threads per rank (default 1: R ranks use R cores). The row "1 rank, R
threads" shows the other way to spend the same cores, one process with R threads.

    python benchmarks/scaling.py                              # CPU: 1 and 2 ranks, M = 128, 1024
    python benchmarks/scaling.py --device cuda --ranks 1,2,4,8   # one GPU per rank
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def worker(args) -> None:
    """One rank's part (run under torchrun)."""
    from aevb.builder import build_model
    from aevb.config import load_config
    from aevb.data import load_data
    from aevb.inference import Split
    from aevb.inference.training import build_engine, distributed, resolve_device, train_epoch
    from aevb.runs import objective_from_config

    torch.set_num_threads(args.threads)
    ctx = distributed.setup(args.device)
    overrides = [f"device={args.device}"] + ([f"data.data_dir={args.data_dir}"] if args.data_dir
                                             else [])
    cfg = load_config(ROOT / "configs" / "vae_fashion.yaml", overrides)
    device = distributed.rank_device(resolve_device(cfg.device), ctx)
    data = load_data(cfg.data, device)
    torch.manual_seed(0)
    model = build_model(cfg.model, (1, 28, 28)).to(device)
    objective = objective_from_config(cfg, model, next(data.valid.batches(2)))
    engine = build_engine("fast", model, objective, "adam", 1e-3, ctx=ctx)
    n = args.steps * args.batch_size
    if n > len(data.train):
        raise SystemExit(f"--steps x batch ({n}) exceeds the {len(data.train)} training images")
    timed = Split(data.train.x[:n], data.train.y[:n], dynamic=True)
    warm = Split(data.train.x[:10 * args.batch_size], data.train.y[:10 * args.batch_size], True)
    for epoch, split in ((1, warm), (2, timed)):
        distributed.seed_epoch(0, epoch, ctx)
        result = train_epoch(model, engine, split, args.batch_size, False, ctx=ctx,
                             shuffle=distributed.shuffle_generator(0, epoch))
    if ctx.is_main:
        print("RESULT " + json.dumps({"images_per_s": result["images_per_s"]}), flush=True)
    distributed.shutdown(ctx)


def measure(ranks: int, threads: int, batch: int, args) -> float:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={ranks}", __file__, "--worker", "--threads", str(threads),
               "--batch-sizes", str(batch), "--steps", str(args.steps), "--device", args.device]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])["images_per_s"]
    raise RuntimeError(f"rank 0 reported nothing:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", default="1,2", help="numbers of ranks, comma-separated (1 first)")
    p.add_argument("--batch-sizes", default="128,1024", help="global minibatch sizes")
    p.add_argument("--steps", type=int, default=40, help="timed global steps per trial")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="CPU threads per rank")
    p.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU per rank)")
    p.add_argument("--data-dir", help="folder with Fashion-MNIST's IDX files")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        args.batch_size = int(args.batch_sizes)
        worker(args)
        return 0
    ranks = [int(r) for r in args.ranks.split(",")]
    if ranks[0] != 1:
        raise SystemExit("--ranks must start with 1 (the reference)")
    print(f"device {args.device}; {args.threads} thread(s) per rank; {args.steps} global steps x "
          f"{args.repeats} repeats; torch {torch.__version__}; {os.cpu_count()} CPUs")
    print("| global batch | ranks | threads/rank | images/s | speed-up | efficiency |")
    print("|---|---|---|---|---|---|")
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        configs = [(r, args.threads) for r in ranks]
        if args.device == "cpu":  # the same cores spent on one process
            configs += [(1, r * args.threads) for r in ranks if r > 1]
        trials: dict[tuple[int, int], list[float]] = {c: [] for c in configs}
        for _ in range(args.repeats):
            for r, t in configs:
                trials[(r, t)].append(measure(r, t, batch, args))
        base = statistics.median(trials[(1, args.threads)])
        for (r, t), values in trials.items():
            rate = statistics.median(values)
            efficiency = rate / (r * base) if t == args.threads else float("nan")
            eff = f"{efficiency:.0%}" if efficiency == efficiency else "–"
            print(f"| {batch} | {r} | {t} | {rate:.0f} | {rate / base:.2f}x | {eff} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
