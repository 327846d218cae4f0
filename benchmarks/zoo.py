"""The AEVB family side by side: one training budget, one evaluation, one table.

Every row trains on dynamically-binarized Fashion-MNIST (50,000 training images; 10,000 held
out for validation) for ``--epochs`` epochs at batch 128 with Adam (lr 1e-3), then is evaluated
on the full 10,000-image test set: the importance-sampled log-likelihood with k = ``--samples``
(default 5000; Burda et al. 2016), the mean log-weight (the ELBO), active units (Burda et al.'s
Cov_x E_q[u] > 0.01) and the median seconds per training epoch. The VAE-like rows use Burda et
al.'s one-stochastic-layer architecture (784-200-200-z50, tanh); DLGM uses their two-layer one
(784-100-100-z100-50-50-z50). VQ-VAE's row gives its ELBO under the learned prior (its guide
is deterministic), the test reconstruction cross-entropy and the codebook's perplexity (see
:mod:`models.vqvae`).

Each row is an ordinary aevb run folder under ``--out``/runs; a row whose evaluation is written
is never re-run, an interrupted one resumes from its last checkpoint, so the script can be
stopped and restarted with the same arguments. The table (Markdown and CSV) is rewritten after
every row, with the rows not finished yet marked so.

    python benchmarks/zoo.py                         # every row (hours on a 2-core CPU)
    python benchmarks/zoo.py --rows vae,iwae50       # some rows
    python benchmarks/zoo.py --device cuda           # on a GPU
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Burda et al. (2016)'s one-stochastic-layer architecture
BURDA_1 = ["model.hidden_sizes=[200, 200]", "model.z_dim=50", "model.activation=tanh"]


@dataclass
class Row:
    """One row: a name on the command line, a label in the table and its config overrides."""

    key: str
    label: str
    overrides: list[str]
    architecture: list[str] = field(default_factory=lambda: list(BURDA_1))
    #: False for a model whose ELBO is its only log-likelihood figure (VQ-VAE)
    likelihood: bool = True


ROWS = [
    Row("vae", "VAE / elbo", ["elbo=elbo"]),
    Row("meanfield", "VAE / meanfield (analytic KL)", ["elbo=meanfield"]),
    Row("iwae5", "IWAE k=5", ["elbo=iwae", "num_particles=5"]),
    Row("iwae50", "IWAE k=50", ["elbo=iwae", "num_particles=50"]),
    Row("beta4", "β-VAE β=4", ["elbo=elbo", "kl.beta=4"]),
    Row("mmd", "InfoVAE / MMD (λ=1000)", ["elbo=mmd"]),
    Row("planar8", "planar flow K=8", ["model.posterior=planar", "model.posterior_size=8"]),
    Row("iaf4", "IAF K=4", ["model.posterior=iaf", "model.posterior_size=4"]),
    Row("lowrank1", "low-rank r=1", ["model.posterior=lowrank", "model.posterior_size=1"]),
    Row("full", "full covariance", ["model.posterior=full"]),
    Row("mixture5", "mixture K=5", ["model.posterior=mixture", "model.posterior_size=5"]),
    Row("dlgm2", "DLGM 2 layers", ["model=dlgm"], architecture=[]),
    Row("rws", "VAE / RWS k=5", ["elbo=rws", "num_particles=5"]),
    Row("sbn_ws", "SBN 200 / wake-sleep", ["model=sbn", "elbo=wake-sleep"],
        architecture=[]),
    Row("sbn_rws", "SBN 200 / RWS k=5", ["model=sbn", "elbo=rws", "num_particles=5",
                                          ], architecture=[]),
    # a deterministic guide: one importance sample is all there is
    Row("vqvae", "VQ-VAE (K=128, D=16, 7×7 grid, EMA, PixelCNN prior)",
        ["model=vqvae", "eval.num_samples=1"], architecture=[], likelihood=False),
]
ROW_KEYS = [r.key for r in ROWS]


def run_settings(args) -> list[str]:
    """The overrides every row of a benchmark table shares: evaluation, device, seed, progress
    and the data options of the command line (``--data-dir``, ``--train-size``, ``--test-size``)."""
    overrides = [f"eval.num_samples={args.samples}", f"device={args.device}", "seed=0",
                 f"train.progress={'true' if args.progress else 'false'}",
                 "train.tensorboard=false"]
    for key, value in (("data_dir", args.data_dir), ("train_size", args.train_size),
                       ("test_size", args.test_size)):
        if value:
            overrides.append(f"data.{key}={value}")
    return overrides


def train_or_resume(label: str, run_dir: Path, config, tag: str = "zoo",
                    evaluate: bool = True) -> None:
    """Train and evaluate (``evaluate``) one row into ``run_dir``, resuming where it stopped;
    ``config()`` builds its config; a row whose evaluation is written is not run again."""
    from aevb.inference.training import list_checkpoints
    from aevb.runs import train

    if (run_dir / "evaluation.json").is_file():
        return
    cfg = config()
    # a folder stopped before its first checkpoint is started over by a resume
    resume = run_dir.is_dir() and any(run_dir.iterdir())
    state = "resuming" if resume and list_checkpoints(run_dir) else "training"
    print(f"[{tag}] {label}: {state} in {run_dir}", flush=True)
    train(cfg, run_dir, resume=resume, final_evaluation=evaluate)


def read_metrics(run_dir: Path) -> list[dict]:
    """A run folder's per-epoch metrics rows (none before its first epoch)."""
    from aevb.inference.training.metrics import MetricsLog

    return MetricsLog(run_dir, tensorboard=False).rows()


def write_results(out: Path, stem: str, fields: list[str], results: list[dict],
                  lines: list[str]) -> str:
    """``out/STEM.csv`` (``fields`` of every result) and ``out/STEM.md`` (``lines``); returns
    the Markdown."""
    with open(out / f"{stem}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results)
    text = "\n".join(lines) + "\n"
    (out / f"{stem}.md").write_text(text)
    return text


def row_config(row: Row, args):
    from aevb.config import load_config

    overrides = [
        "data.name=fashion-mnist", "data.binarization=dynamic", "train.batch_size=128",
        "optim.name=adam", "optim.lr=1e-3", f"train.epochs={args.epochs}",
        *run_settings(args), *row.architecture, *row.overrides,
    ]
    return load_config(None, overrides)


def run_row(row: Row, args) -> None:
    """Train and evaluate one row into its run folder, resuming where it stopped."""
    train_or_resume(row.label, args.out / "runs" / row.key, lambda: row_config(row, args))


def row_figures(row: Row, out: Path) -> dict:
    run_dir = out / "runs" / row.key
    figures: dict = {"row": row.key, "label": row.label}
    evaluation = run_dir / "evaluation.json"
    if not evaluation.is_file():
        return figures
    ev = json.loads(evaluation.read_text())
    rows = read_metrics(run_dir)
    figures |= {k: ev.get(k) for k in ("log_likelihood", "log_likelihood_stderr", "elbo",
                                       "active_units", "num_images", "num_samples",
                                       "reconstruction", "perplexity", "codes_used")}
    if not row.likelihood:
        figures["log_likelihood"] = None
    figures["epochs"] = len(rows)
    figures["seconds_per_epoch"] = statistics.median(r["seconds"] for r in rows)
    return figures


def _cell(value, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def write_table(results: list[dict], out: Path, args) -> str:
    fields = ["row", "label", "log_likelihood", "log_likelihood_stderr", "elbo", "active_units",
              "seconds_per_epoch", "epochs", "num_images", "num_samples", "reconstruction",
              "perplexity", "codes_used"]
    test = f"first {args.test_size} test images" if args.test_size else "the full 10,000-image test set"
    train = f"{args.train_size} training images" if args.train_size else "50,000 training images"
    lines = [
        f"Fashion-MNIST, dynamic binarization, {train}, {args.epochs} epochs at batch 128 (Adam, "
        f"lr 1e-3), evaluated on {test}: log p(x) by importance sampling with "
        f"k={args.samples}, ELBO = mean log-weight, active units out of 50 (DLGM: of z1's 100; "
        f"SBN: of 200), median seconds per epoch on `{args.device}`.",
        "",
        "| model / objective | test log p(x) (IS) | test ELBO | active units | s/epoch | "
        "reconstruction (nats) | code perplexity |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "seconds_per_epoch" not in r:
            lines.append(f"| {r['label']} | not run yet | | | | | |")
            continue
        ll = ("–" if r.get("log_likelihood") is None else
              f"{r['log_likelihood']:.2f} ± {r['log_likelihood_stderr']:.2f}")
        lines.append(
            f"| {r['label']} | {ll} | {_cell(r.get('elbo'), '.2f')} | "
            f"{_cell(r.get('active_units'), 'd')} | {r['seconds_per_epoch']:.1f} | "
            f"{_cell(r.get('reconstruction'), '.2f')} | {_cell(r.get('perplexity'), '.1f')} |")
    return write_results(out, "zoo", fields, results, lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default=",".join(ROW_KEYS),
                        help=f"comma-separated rows out of {','.join(ROW_KEYS)}")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--samples", type=int, default=5000, help="k of the IS log-likelihood")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "zoo")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--train-size", type=int, default=None, help="smoke tests only")
    parser.add_argument("--test-size", type=int, default=None, help="smoke tests only")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    args = parser.parse_args(argv)
    chosen = [k.strip() for k in args.rows.split(",") if k.strip()]
    unknown = sorted(set(chosen) - set(ROW_KEYS))
    if unknown:
        parser.error(f"unknown rows {', '.join(unknown)}; rows: {', '.join(ROW_KEYS)}")
    rows = [r for r in ROWS if r.key in chosen]
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {k: getattr(args, k) for k in ("epochs", "samples", "train_size", "test_size")}
    saved = args.out / "settings.json"
    if saved.is_file() and json.loads(saved.read_text()) != settings:
        parser.error(f"{args.out} holds rows run with {saved.read_text().strip()}; restart with "
                     "the same --epochs/--samples/--train-size/--test-size or choose another --out")
    saved.write_text(json.dumps(settings) + "\n")
    for row in rows:
        run_row(row, args)
        # every row finished in this folder, also by other invocations
        print(write_table([row_figures(r, args.out) for r in ROWS], args.out, args), flush=True)


if __name__ == "__main__":
    main()
