"""The AEVB family side by side: one training budget, one evaluation, one table.

Every row trains on dynamically-binarized Fashion-MNIST (50,000 training images; 10,000 held
out for validation) for ``--epochs`` epochs at batch 128 with Adam (lr 1e-3), then is evaluated
on the full 10,000-image test set: the importance-sampled log-likelihood with k = ``--samples``
(default 5000; Burda et al. 2016), the mean log-weight (the ELBO), active units (Burda et al.'s
Cov_x E_q[u] > 0.01) and the median seconds per training epoch. The VAE-like rows use Burda et
al.'s one-stochastic-layer architecture (784-200-200-z50, tanh); DLGM has two stochastic
layers (aevb's default, 784-100-100-z100-50-50-z50: narrower than Burda et al.'s two-layer
784-200-200-z100-100-100-z50, which ``benchmarks/burda.py`` trains). VQ-VAE's row gives its
ELBO under the learned prior (its guide is deterministic), the test reconstruction
cross-entropy and the codebook's perplexity (see :mod:`models.vqvae`).

The table is a grid definition on aevb's sweep engine (:mod:`aevb.sweeps`): one axis, ``row``,
whose values stand for their overrides. Each row is an ordinary aevb run folder under
``--out``/runs; a row whose evaluation is written is never re-run, an interrupted one resumes
from its last checkpoint, so the script can be stopped and restarted with the same arguments
(more ``--rows`` add rows; more ``--epochs`` train every row on; other changed settings are
refused, naming them). The table (Markdown and CSV) is rewritten after every row, with the rows
not finished yet marked so.

    python benchmarks/zoo.py                         # every row (hours on a 2-core CPU)
    python benchmarks/zoo.py --rows vae,iwae50       # some rows
    python benchmarks/zoo.py --device cuda           # on a GPU
"""

from __future__ import annotations

import argparse
import csv
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


def add_row_arguments(parser: argparse.ArgumentParser, row_keys: list[str],
                      default_rows: list[str]) -> None:
    """The command-line options of a benchmark table that :func:`run_settings` and
    :func:`chosen_rows` read: ``--rows``, ``--samples``, ``--device``, ``--data-dir``,
    ``--train-size``, ``--test-size`` and ``--no-progress``."""
    parser.add_argument("--rows", default=",".join(default_rows),
                        help=f"comma-separated rows out of {','.join(row_keys)}")
    parser.add_argument("--samples", type=int, default=5000, help="k of the IS log-likelihood")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default=None, help="folder with the dataset's files")
    parser.add_argument("--train-size", type=int, default=None, help="smoke tests only")
    parser.add_argument("--test-size", type=int, default=None, help="smoke tests only")
    parser.add_argument("--no-progress", dest="progress", action="store_false")


def chosen_rows(parser: argparse.ArgumentParser, args, rows: list) -> list:
    """The rows of ``rows`` (objects with a ``key``) named by ``--rows``, in table order; an
    unknown name is a usage error that lists the known ones."""
    keys = [r.key for r in rows]
    chosen = [k.strip() for k in args.rows.split(",") if k.strip()]
    unknown = sorted(set(chosen) - set(keys))
    if unknown:
        parser.error(f"unknown rows {', '.join(unknown)}; rows: {', '.join(keys)}")
    return [r for r in rows if r.key in chosen]


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


def sweep(rows: list[Row], args):
    """The zoo as a grid: the ``row`` axis, each value standing for its row's overrides, each
    row's run folder ``runs/KEY``."""
    from aevb.sweeps import Axis, Sweep

    fixed = ["data.name=fashion-mnist", "data.binarization=dynamic", "train.batch_size=128",
             "optim.name=adam", "optim.lr=1e-3", f"train.epochs={args.epochs}",
             *run_settings(args)]
    axis = Axis("row", tuple(r.key for r in rows),
                {r.key: (*r.architecture, *r.overrides) for r in rows})
    return Sweep(args.out, [axis], fixed, naming=lambda cell: cell.coords["row"])


def row_figures(row: Row, out: Path) -> dict:
    from aevb.sweeps import run_figures

    figures: dict = {"row": row.key, "label": row.label}
    run_dir = out / "runs" / row.key
    if not (run_dir / "evaluation.json").is_file():
        return figures
    figures |= run_figures(run_dir)
    if not row.likelihood:
        figures["log_likelihood"] = None
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
    add_row_arguments(parser, ROW_KEYS, ROW_KEYS)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "zoo")
    args = parser.parse_args(argv)
    rows = chosen_rows(parser, args, ROWS)
    from aevb.inference.errors import AevbError
    from aevb.sweeps import Local, execute

    try:
        grid = sweep(rows, args)
        tasks = grid.tasks()
        grid.claim()
    except AevbError as exc:
        parser.error(str(exc))
    # after each row: every row finished in this folder (also by other invocations)
    execute(tasks, Local(), progress=False, on_result=lambda task, result: print(
        write_table([row_figures(r, args.out) for r in ROWS], args.out, args), flush=True))


if __name__ == "__main__":
    main()
