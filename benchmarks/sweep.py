"""The sweep engine's cost on this machine: its overhead per run over calling the trainer
directly, and the wall time of a 12-run tiny sweep under each executor.

* **overhead**: ``--cells`` tiny runs (a 784-64-z8 VAE, 2 epochs of 1000 Fashion-MNIST images,
  k = 10 on 100 test images; ``seed`` = 0, 1, ...) trained by :func:`aevb.runs.train` one after
  another, and the same runs as a sweep (:class:`aevb.sweeps.Sweep`, the ``local`` executor:
  every cell's config checked, the folder claimed, the runs, their figures read back, the table
  and its plot written), alternating in rounds (``benchmarks/_rounds.py``), each trial into
  fresh folders; the median seconds per run of each and their difference.
* **executors**: a 12-run grid (``elbo=elbo,iwae`` × ``seed=0:6``, the same tiny runs) into a
  fresh folder with ``local``, ``processes --workers 2`` and ``ray`` on a 2-CPU local cluster
  that the script starts (``ray start --head --block``, stopped at the end; its start-up is
  reported apart). Each executor's table must equal the local one's.

    python benchmarks/sweep.py --data-dir /usr/share/fashion-mnist   # ~5 min on 2 cores
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _rounds import alternate

ROOT = Path(__file__).resolve().parents[1]


def tiny(args) -> list[str]:
    return [f"data.train_size={args.train_size}", "data.test_size=100", "data.validation_size=100",
            f"train.epochs={args.epochs}", "eval.num_samples=10", "train.progress=false",
            "train.tensorboard=false", "model.hidden_sizes=[64]", "model.z_dim=8",
            "num_particles=2", "device=cpu"] + ([f"data.data_dir={args.data_dir}"]
                                                if args.data_dir else [])


def overhead(args, scratch: Path) -> dict:
    """``--cells`` runs (``seed=0..``) by :func:`aevb.runs.train` one after another, against
    the same runs as a sweep (``local``), alternating in rounds; seconds per run."""
    from aevb.config import load_config
    from aevb.runs import train
    from aevb.sweeps import Sweep, parse

    counter = iter(range(10**6))
    n = args.cells

    def direct() -> float:
        out = scratch / f"direct-{next(counter)}"
        t0 = time.perf_counter()
        for seed in range(n):
            train(load_config("vae_fashion", [*tiny(args), f"seed={seed}"]), out / str(seed))
        return (time.perf_counter() - t0) / n

    def swept() -> float:
        fixed, axes = parse([*tiny(args), f"seed=0:{n}"])
        t0 = time.perf_counter()
        Sweep(scratch / f"sweep-{next(counter)}", axes, fixed, "vae_fashion").run(progress=False)
        return (time.perf_counter() - t0) / n

    times, _ = alternate({"direct": direct, "sweep": swept}, args.rounds, ("sweep", "direct"))
    d, s = statistics.median(times["direct"]), statistics.median(times["sweep"])
    return {"direct": d, "sweep": s, "overhead": s - d, "rounds": args.rounds}


@contextlib.contextmanager
def ray_cluster(cpus: int):
    ray_bin = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if ray_bin is None:
        raise SystemExit("Ray is not installed: pip install 'aevb[ray]'")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = Path(f"/tmp/aevb-ray-bench-{os.getpid()}")
    t0 = time.perf_counter()
    head = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", "--num-cpus", str(cpus), "--port", str(port),
         "--include-dashboard=false", "--disable-usage-stats", "--temp-dir", str(temp)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        while subprocess.run([ray_bin, "status", "--address", address],
                             capture_output=True).returncode:
            time.sleep(0.5)
        yield address, time.perf_counter() - t0
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def executors(args, scratch: Path) -> list[dict]:
    """Each executor's wall time for the 12-run grid, in a subprocess of the CLI (as a user
    runs it), into a fresh folder."""
    grid = [*tiny(args), "elbo=elbo,iwae", "seed=0:6"]
    rows = []

    def run(name: str, extra: list[str]) -> None:
        out = scratch / f"grid-{name}"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "aevb.cli", "sweep", "--config", "vae_fashion",
                        *grid, "--out", str(out), "--no-progress", *extra], check=True,
                       capture_output=True)
        rows.append({"executor": name, "seconds": time.perf_counter() - t0,
                     "table": (out / "results.csv").read_text()})

    run("local", [])
    run("processes --workers 2", ["--executor", "processes", "--workers", "2"])
    with ray_cluster(2) as (address, startup):
        run("ray (2-CPU local cluster)", ["--executor", "ray", "--address", address])
    rows[-1]["startup"] = startup
    for r in rows:
        r["same_table"] = r["table"] == rows[0]["table"]
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--train-size", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cells", type=int, default=6, help="runs of the overhead's sweep")
    parser.add_argument("--parts", default="overhead,executors")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    lines = []
    with tempfile.TemporaryDirectory(prefix="aevb-sweep-bench-") as tmp:
        scratch = Path(tmp)
        if "overhead" in parts:
            o = overhead(args, scratch)
            lines += [f"Overhead per run ({args.cells} runs of {args.epochs} epochs of "
                      f"{args.train_size} images, median of {o['rounds']} alternating rounds):",
                      "",
                      "| path | seconds per run |", "|---|---|",
                      f"| aevb.runs.train directly | {o['direct']:.2f} |",
                      f"| a {args.cells}-run sweep, local executor | {o['sweep']:.2f} |",
                      f"| difference | {o['overhead']:+.3f} |", ""]
        if "executors" in parts:
            rows = executors(args, scratch)
            lines += ["12-run grid (elbo=elbo,iwae × seed=0:6), `aevb sweep` from the command "
                      "line, wall time:", "", "| executor | seconds | same table as local |",
                      "|---|---|---|"]
            for r in rows:
                lines.append(f"| {r['executor']} | {r['seconds']:.1f} | "
                             f"{'yes' if r['same_table'] else 'NO'} |")
            if "startup" in rows[-1]:
                lines.append(f"\nThe Ray cluster's start-up (`ray start --head`), not counted "
                             f"above: {rows[-1]['startup']:.1f} s.")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
