"""Burda, Grosse & Salakhutdinov (2016), Table 1 on MNIST: VAE and IWAE, one and two stochastic
layers, with their architectures and their schedule, against the published negative
log-likelihoods.

Every row trains on the 60,000 dynamically binarized MNIST training images (no validation
split, as the paper) at batch 20 with Adam (β = (0.9, 0.999), ε = 1e-4) and the paper's
learning rate, 1e-3·10^(−i/7) for 3^i passes, i = 0..``--stages``−1 (all eight stages, 3280
passes, by default; fewer stages is a stated shorter budget), then is evaluated on the full
10,000-image test set: −log p(x) by importance sampling with k = 5000, and active units
(Cov_x E_q[u] > 0.01). One layer: 784-200-200-z50 (tanh); two layers:
784-200-200-z100-100-100-z50.

Each row is an ordinary aevb run folder under ``--out``/runs; a checkpoint is written after
every pass and an interrupted row resumes from it, so the same command continues the work in
the next sitting. The default ``--out`` is tracked by git, newest checkpoint included (a few
MB a row), so a sitting on a fresh checkout resumes too. The table (``burda.md``,
``burda.csv``) holds every row trained in ``--out``, at each budget it was trained to; it is
rewritten after every row, and ``--table`` writes it from whatever is there (passes done so far
for unfinished rows).

    python benchmarks/burda.py --data-dir ../shared/data/mnist                # vae1, iwae1_k5
    python benchmarks/burda.py --rows vae2,iwae2_k5 --stages 5 --data-dir ...  # 121 passes
    python benchmarks/burda.py --table --data-dir ...
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

# the sibling script's shared options, settings and files
from zoo import add_row_arguments, chosen_rows, run_settings, write_results

from aevb.sweeps import TrainTask, metrics_rows

ROOT = Path(__file__).resolve().parents[1]

ONE_LAYER = ["model=vae", "model.hidden_sizes=[200, 200]", "model.z_dim=50",
             "model.activation=tanh"]
TWO_LAYERS = ["model=dlgm", "model.options={z_dims: [100, 50], "
              "layer_hidden: [[200, 200], [100, 100]]}"]


@dataclass
class Row:
    key: str
    label: str
    overrides: list[str]
    paper_nll: float  # Burda et al. (2016), Table 1, k=5000 test NLL


ROWS = [
    Row("vae1", "1 layer, VAE (k=1)", [*ONE_LAYER, "elbo=elbo"], 86.76),
    Row("iwae1_k5", "1 layer, IWAE k=5", [*ONE_LAYER, "elbo=iwae", "num_particles=5"], 85.54),
    Row("iwae1_k50", "1 layer, IWAE k=50", [*ONE_LAYER, "elbo=iwae", "num_particles=50"], 84.78),
    Row("vae2", "2 layers, VAE (k=1)", [*TWO_LAYERS, "elbo=elbo"], 85.33),
    Row("iwae2_k5", "2 layers, IWAE k=5", [*TWO_LAYERS, "elbo=iwae", "num_particles=5"], 83.89),
    Row("iwae2_k50", "2 layers, IWAE k=50", [*TWO_LAYERS, "elbo=iwae", "num_particles=50"],
        82.90),
]
ROW_KEYS = [r.key for r in ROWS]


def passes(stages: int) -> int:
    from aevb.inference.training.schedules import burda_passes

    return burda_passes(stages - 1)


def row_dir(row: Row, out: Path, stages: int) -> Path:
    return out / "runs" / f"{row.key}-stages{stages}"


def table_rows(chosen: list[Row], args) -> list[tuple[Row, int]]:
    """The table's rows: the chosen rows at ``--stages``, and every other row trained in
    ``--out`` at any budget (the full one first), so one table holds them all."""
    return [(row, stages) for row in ROWS for stages in range(8, 0, -1)
            if (row in chosen and stages == args.stages)
            or row_dir(row, args.out, stages).is_dir()]


def row_task(row: Row, args) -> TrainTask:
    """The row's run: trained, or resumed where it stopped, and evaluated (aevb's sweep task)."""
    overrides = (
        "data.name=mnist", "data.binarization=dynamic", "data.validation_size=0",
        "train.batch_size=20", "optim.name=adam", "optim.lr=1e-3", "optim.eps=1e-4",
        "optim.schedule=burda", f"train.epochs={passes(args.stages)}", "train.keep_checkpoints=1",
        *run_settings(args), *row.overrides,
    )
    return TrainTask(row.key, str(row_dir(row, args.out, args.stages)), None, overrides,
                     {"row": row.key})


def row_figures(row: Row, out_dir: Path, stages: int) -> dict:
    run_dir = row_dir(row, out_dir, stages)
    out = {"row": row.key, "label": row.label, "paper_nll": row.paper_nll,
           "budget": passes(stages)}
    rows = metrics_rows(run_dir)
    if rows:
        out |= {"passes": len(rows), "hours": sum(r["seconds"] for r in rows) / 3600,
                "train_objective": rows[-1]["train_objective"]}
    evaluation = run_dir / "evaluation.json"
    if evaluation.is_file():
        ev = json.loads(evaluation.read_text())
        out |= {"nll": -ev["log_likelihood"], "stderr": ev["log_likelihood_stderr"],
                "elbo": ev["elbo"], "active_units": ev["active_units"],
                "num_images": ev["num_images"], "num_samples": ev["num_samples"]}
        out["minus_paper"] = out["nll"] - row.paper_nll
    return out


def write_table(results: list[dict], args) -> str:
    fields = ["row", "label", "paper_nll", "nll", "stderr", "minus_paper", "elbo",
              "active_units", "passes", "budget", "hours", "train_objective", "num_images",
              "num_samples"]
    subset = " (SUBSET: smoke settings)" if args.train_size or args.test_size else ""
    lines = [
        f"MNIST{subset}, dynamic binarization, {args.train_size or 60000} training images, batch "
        f"20, Adam (ε = 1e-4), Burda et al.'s schedule for as many of its eight stages as "
        f"the budget (passes) holds ({passes(8)} passes = the paper's full budget); test "
        f"−log p(x) by importance sampling with k={args.samples} on {args.test_size or 10000} "
        f"test images; seed 0.",
        "", "| model | paper NLL | aevb NLL (± s.e.) | aevb − paper | test ELBO | active units "
        "| passes | hours |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        done = f"{r.get('passes', 0)}/{r['budget']}"
        hours = f"{r['hours']:.1f}" if "hours" in r else ""
        if "nll" not in r:
            state = "training" if r.get("passes") else "not started"
            lines.append(f"| {r['label']} | {r['paper_nll']:.2f} | {state} | | | | {done} | "
                         f"{hours} |")
            continue
        lines.append(f"| {r['label']} | {r['paper_nll']:.2f} | {r['nll']:.2f} ± {r['stderr']:.2f} "
                     f"| {r['minus_paper']:+.2f} | {r['elbo']:.2f} | {r['active_units']} | "
                     f"{done} | {hours} |")
    return write_results(args.out, "burda", fields, results, lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_row_arguments(parser, ROW_KEYS, ["vae1", "iwae1_k5"])
    parser.add_argument("--stages", type=int, default=8,
                        help="stages of the schedule (8 = the paper's 3280 passes)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "burda",
                        help="results folder (default: benchmarks/results/burda, tracked by "
                             "git with its newest checkpoints, so the next sitting resumes)")
    parser.add_argument("--table", action="store_true", help="only write the table")
    args = parser.parse_args(argv)
    rows = chosen_rows(parser, args, ROWS)
    if not 1 <= args.stages <= 8:
        parser.error("--stages: 1 to 8 (the paper's schedule has eight stages)")
    args.out.mkdir(parents=True, exist_ok=True)
    def table() -> str:
        return write_table([row_figures(r, args.out, s) for r, s in table_rows(rows, args)],
                           args)

    if not args.table:
        for row in rows:
            print(f"[burda] {row.label}: {row_dir(row, args.out, args.stages)}", flush=True)
            row_task(row, args).run()
            print(table(), flush=True)
    print(table(), end="")


if __name__ == "__main__":
    main()
