"""The runs of a semi-supervised results folder, selected as if each had trained ``--epochs``.

The runner picks each run's test accuracy at its best validation epoch over all the epochs it
trained. Runs that are still going (M1+M2 for Kingma et al.'s 3000 epochs, over many sittings)
are compared at one shared, stated budget instead: for every run that has reached it, the first
epoch up to ``--epochs`` with the highest validation accuracy and the test accuracy recorded
there (:func:`aevb.experiments.semisupervised.best_within`), then the mean and 95% interval of
the test error over the labelled subsets, and each method's difference to ``baseline`` paired
over the subsets both have. A run short of the budget is listed and left out of the means.
With ``--against OTHER``, a second folder (another setting of the same runner: the same
methods, label counts and seeds) is read at the same budget, and each method's difference
between the two folders is paired over the labelled subsets both have reached it with.
Nothing in either folder is changed; the tables go to stdout.

    python benchmarks/at_budget.py benchmarks/results/m1m2-released-kingma-meanfield --epochs 1000
    python benchmarks/at_budget.py benchmarks/results/semisupervised-mnist-balance-10 --epochs 60 \
      --against benchmarks/results/semisupervised-mnist-zkl-60
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from aevb.experiments.semisupervised import best_within, summarize
from aevb.inference.errors import CheckpointError
from aevb.inference.training.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from aevb.inference.training.metrics import MetricsLog
from aevb.sweeps import table


def saved_state(run_dir: Path) -> dict | None:
    """The best epoch and its test accuracy as the run saved them: its newest checkpoint's
    ``extra`` or, for a finished run, ``result.json``."""
    for _ in range(3):  # a run that is going on replaces its checkpoint each epoch
        if not list_checkpoints(run_dir):
            break
        try:
            return load_checkpoint(latest_checkpoint(run_dir))["extra"]
        except CheckpointError:
            continue
    result = run_dir / "result.json"
    if result.is_file():
        saved = json.loads(result.read_text())
        return {"best_epoch": saved["best_epoch"], "test_at_best": saved["test_accuracy"]}
    return None


def at_budget(folder: Path, epochs: int) -> list[dict]:
    """One row per run of ``folder``: the epochs it trained and its selection at ``epochs``
    (``None`` where it has not reached the budget or its test accuracy there was not kept)."""
    if not (folder / "runs").is_dir():
        raise SystemExit(f"{folder}: no runs/ folder; give a semi-supervised results folder")
    runs = []
    for run_dir in sorted((folder / "runs").iterdir()):
        try:
            method, labels, seed = run_dir.name.split("-")
        except ValueError:  # not a run of the runner (METHOD-nLABELS-seedSEED)
            continue
        rows = MetricsLog(run_dir, tensorboard=False).rows()
        trained = rows[-1]["epoch"] if rows else 0
        best = best_within(rows, epochs) if trained >= epochs else None
        if best is not None and best["test_accuracy"] is None:  # a row from before it was kept
            best = best_within(rows, epochs, saved_state(run_dir))
        runs.append({"method": method, "labels": int(labels[1:]), "seed": int(seed[4:]),
                     "trained": trained, "best": best})
    return runs


def selected(runs: list[dict]) -> list[dict]:
    """The runs that reached the budget with a recorded test accuracy, with that accuracy."""
    return [r | {"test_accuracy": r["best"]["test_accuracy"]} for r in runs
            if r["best"] is not None and r["best"]["test_accuracy"] is not None]


def against(ours: list[dict], theirs: list[dict]) -> list[dict]:
    """Per (labels, method): this folder's and the other's test accuracy on each labelled
    subset both have, and the mean and 95% interval of the paired difference (ours − theirs)."""
    theirs_by = {(r["labels"], r["method"], r["seed"]): r["test_accuracy"] for r in theirs}
    pairs: dict[tuple, list] = {}
    for r in ours:
        key = (r["labels"], r["method"], r["seed"])
        if key in theirs_by:
            pairs.setdefault(key[:2], []).append((r["seed"], r["test_accuracy"], theirs_by[key]))
    rows = []
    for (labels, method), subsets in sorted(pairs.items()):
        diff, half = table.mean_ci([a - b for _, a, b in subsets])
        rows.append({"labels": labels, "method": method, "diff": diff, "ci95": half,
                     "subsets": sorted(subsets)})
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, help="a semi-supervised results folder")
    p.add_argument("--epochs", type=int, required=True, help="the budget every run is read at")
    p.add_argument("--against", type=Path, metavar="OTHER",
                   help="a second results folder: differences paired over shared subsets")
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error(f"--epochs {args.epochs}: give a positive number of epochs")
    runs = at_budget(args.folder, args.epochs)
    other = at_budget(args.against, args.epochs) if args.against else None
    print(f"Selection within the first {args.epochs} epochs (test accuracy at the best "
          "validation epoch):\n")
    print("| run | epochs trained | best epoch | valid | test |")
    print("|---|---|---|---|---|")
    for r in runs:
        name = f"{r['method']}, {r['labels']} labels, seed {r['seed']}"
        b = r["best"]
        if b is None:
            print(f"| {name} | {r['trained']} | short of the budget | | |")
            continue
        test = "not recorded" if b["test_accuracy"] is None else f"{100 * b['test_accuracy']:.2f}%"
        print(f"| {name} | {r['trained']} | {b['epoch']} | {100 * b['valid_accuracy']:.2f}% "
              f"| {test} |")
    kept = selected(runs)
    print("\n| method | labels | subsets | test error (mean ± 95% CI) | minus baseline, paired |")
    print("|---|---|---|---|---|")
    for s in summarize(kept):
        paired = (f"{100 * s['paired_diff']:+.2f} ± {100 * s['paired_ci95']:.2f} points"
                  if s["paired_seeds"] else "")
        print(f"| {s['method']} | {s['labels']} | {s['seeds']} | {100 * s['error']:.2f}% ± "
              f"{100 * s['ci95']:.2f} | {paired} |")
    if other is None:
        return
    print(f"\nMinus {args.against}, paired over the subsets both folders reached the budget "
          "with (test accuracy, points):\n")
    print("| method | labels | subsets: this folder / the other | difference, paired (± 95% CI) |")
    print("|---|---|---|---|")
    for r in against(kept, selected(other)):
        subsets = ", ".join(f"seed {s} {100 * a:.2f}% / {100 * b:.2f}%" for s, a, b in r["subsets"])
        half = "n/a" if math.isnan(r["ci95"]) else f"{100 * r['ci95']:.2f}"
        print(f"| {r['method']} | {r['labels']} | {subsets} | {100 * r['diff']:+.2f} ± {half} |")


if __name__ == "__main__":
    main()
