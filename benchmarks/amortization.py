"""The amortization gap of VAEs with three posterior families, on MNIST (Cremer, Li & Duvenaud
2018, Table 2's question: how much of log p(x) - ELBO is the shared encoder's, how much the
family's).

For each ``--posteriors`` family, a 784-400-z50 tanh VAE (the main job's network) trains with
the ELBO for ``--epochs`` epochs on dynamically-binarized MNIST (a run folder under ``--out``;
a finished run is reused, an unfinished one resumes). Then on the first ``--images`` test
images each image's q is refined from the encoder's output for ``--refine`` Adam steps
(:mod:`aevb.uses.amortization`), and log p(x) is importance-sampled from the refined q with
``--num-samples`` draws. The table gives, in nats per image, the amortized and refined ELBOs,
log p(x) and the two gaps; ``--table`` only writes it from the saved figures.

    python benchmarks/amortization.py --data-dir ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAMILY_OPTIONS = {"diag": [], "full": [], "lowrank": ["model.posterior_size=4"],
                  "iaf": ["model.posterior_size=2"], "planar": ["model.posterior_size=4"],
                  "mixture": ["model.posterior_size=4"]}


def measure(posterior: str, args) -> dict:
    import torch

    import aevb

    overrides = [f"data.name={args.dataset}", f"train.epochs={args.epochs}",
                 f"model.posterior={posterior}", *FAMILY_OPTIONS[posterior],
                 "eval.num_samples=10", f"train.progress={str(args.progress).lower()}"]
    if args.data_dir:
        overrides.append(f"data.data_dir={args.data_dir}")
    if args.train_size:
        overrides += [f"data.train_size={args.train_size}", f"data.test_size={args.images}"]
    run_dir = args.out / "runs" / posterior
    finished = (run_dir / "checkpoints" / f"epoch-{args.epochs:04d}.pt").is_file()
    run = (aevb.load(run_dir) if finished else
           aevb.fit("vae", config="vae_fashion", overrides=overrides, run_dir=run_dir,
                    resume=run_dir.is_dir(), evaluate=False))
    torch.manual_seed(0)
    result = run.amortization_gap(args.refine, args.refine_lr, args.refine_samples,
                                  args.num_samples, images=args.images)
    return result | {"posterior": posterior, "epochs": args.epochs}


def table(rows: list[dict]) -> str:
    first = rows[0]
    lines = [f"{first['data']['dataset'] if 'data' in first else 'data'}, first "
             f"{first['images']} {first['split']} images; 784-400-z50 VAE, ELBO, "
             f"{first['epochs']} epochs; q refined per image for {first['refine_steps']} Adam "
             f"steps (lr {first['refine_lr']:g}, {first['refine_samples']} draws per step); "
             f"log p(x) importance-sampled from the refined q, k = {first['num_samples']}; "
             "nats per image", "",
             "| posterior | ELBO (encoder) | ELBO (refined) | log p(x) | inference gap | "
             "amortization gap | approximation gap |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['posterior']} | {r['elbo_amortized']:.2f} | {r['elbo_refined']:.2f}"
                     f" | {r['log_likelihood']:.2f} | {r['inference_gap']:.2f} | "
                     f"{r['amortization_gap']:.2f} | {r['approximation_gap']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--posteriors", default="diag,full,iaf")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--refine", type=int, default=200, help="Adam steps per image")
    p.add_argument("--refine-lr", type=float, default=1e-2)
    p.add_argument("--refine-samples", type=int, default=10)
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "amortization")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--train-size", type=int, default=None, help="smoke tests only")
    p.add_argument("--table", action="store_true", help="only write the table")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    figures = args.out / "figures.json"
    saved = json.loads(figures.read_text()) if figures.is_file() else {}
    for posterior in args.posteriors.split(","):
        if posterior not in FAMILY_OPTIONS:
            raise SystemExit(f"--posteriors: {posterior!r} is not one of "
                             f"{', '.join(FAMILY_OPTIONS)}")
        if args.table or posterior in saved:
            continue
        saved[posterior] = measure(posterior, args)
        figures.write_text(json.dumps(saved, indent=2) + "\n")
    rows = [saved[p] for p in args.posteriors.split(",") if p in saved]
    if rows:
        text = table(rows)
        (args.out / "table.md").write_text(text)
        print(text)


if __name__ == "__main__":
    main()
