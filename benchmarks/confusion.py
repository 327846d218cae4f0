"""Which classes a semi-supervised run confuses: q(y|x)'s confusion matrix on the test set and,
for M2, the generative classifier's (argmax_y ELBO(x, y)), from each run's newest checkpoint.

A class whose decoder explains another class's images better than that class's own decoder
takes them over; q(y|x), trained on the unlabelled images towards the bound's posterior over y,
follows. The two matrices side by side tell that apart from a classifier that errs on its own.
The newest checkpoint is the run's last epoch (only the newest is kept), not its best
validation epoch; the runner's ``result.json`` holds the best epoch's q(y|x) matrix
(``test_confusion``) for runs trained since it records one, and ``--recorded`` prints those
instead (no checkpoint, data or model is read). Nothing is written.

    python benchmarks/confusion.py benchmarks/results/semisupervised-mnist-zkl-60 \\
        --runs m2-n100-seed1,m2-n100-seed2 --data-dir ../shared/data/mnist
    python benchmarks/confusion.py benchmarks/results/semisupervised-mnist-balance-10-grid \\
        --recorded
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from aevb.experiments.semisupervised import Experiment
from aevb.inference.semisupervised import M2, accuracy_of, confusion, generative_classifier


def shares(counts: torch.Tensor, floor: float) -> list[tuple[int, int, float]]:
    """(true class, predicted class, share of the true class's images) for every off-diagonal
    cell holding at least ``floor`` of its row, largest first."""
    rows = counts / counts.sum(1, keepdim=True).clamp_min(1)
    cells = [(i, j, float(rows[i, j])) for i in range(len(rows)) for j in range(len(rows))
             if i != j and rows[i, j] >= floor]
    return sorted(cells, key=lambda c: -c[2])


def markdown(counts: torch.Tensor) -> str:
    classes = range(len(counts))
    lines = ["| true \\ predicted | " + " | ".join(map(str, classes)) + " |",
             "|---" * (len(counts) + 1) + "|"]
    lines += [f"| **{i}** | " + " | ".join(str(int(v)) for v in row) + " |"
              for i, row in enumerate(counts)]
    return "\n".join(lines)


def run_names(folder: Path, holding: str) -> list[str]:
    """The folder's runs that hold ``holding`` (a file or a folder), by name."""
    return sorted(d.name for d in (folder / "runs").iterdir() if (d / holding).exists())


def show(name: str, epoch: int, matrices: dict[str, torch.Tensor], floor: float) -> None:
    print(f"\n## {name}, epoch {epoch}\n")
    for which, counts in matrices.items():
        accuracy = accuracy_of(counts)
        taken = ", ".join(f"{i}→{j} {100 * share:.1f}%" for i, j, share in shares(counts, floor))
        print(f"{which}: accuracy {100 * accuracy:.2f}%; shares of a class given to "
              f"another (≥ {100 * floor:.0f}%): {taken or 'none'}\n")
        print(markdown(counts) + "\n")


def recorded(folder: Path, runs: list[str] | None, floor: float) -> dict:
    """The q(y|x) matrix each run's ``result.json`` kept from its best validation epoch."""
    names = runs or run_names(folder, "result.json")
    found = {}
    for name in names:
        path = folder / "runs" / name / "result.json"
        if not path.is_file():
            raise SystemExit(f"{path}: no such file; give finished runs (--runs)")
        result = json.loads(path.read_text())
        if result.get("test_confusion") is None:
            print(f"\n## {name}: its result.json has no test_confusion (trained before the "
                  "runner recorded it); drop --recorded to score its checkpoint")
            continue
        found[name] = {"q(y|x)": torch.tensor(result["test_confusion"])}
        show(name, result["best_epoch"], found[name], floor)
    return found


def report(folder: Path, runs: list[str] | None, data_dir: str | None, floor: float) -> dict:
    experiment = Experiment.from_folder(folder, data_dir)
    names = runs or run_names(folder, "checkpoints")
    found = {}
    for name in names:
        method_name, labels, seed = name.split("-")
        if not (folder / "runs" / name / "checkpoints").is_dir():
            raise SystemExit(f"{folder / 'runs' / name}: no checkpoints; give a run that has "
                             "them (--runs), e.g. one trained on this machine")
        method, epoch = experiment.trained(method_name, int(labels[1:]), int(seed[4:]))
        method.module.eval()
        # the test split the runner scores q(y|x) on (grey levels, or M1's codes)
        matrices = {"q(y|x)": confusion(method.classify, method.data.test)}
        if isinstance(method, M2):  # the generative model scores what it observes
            test = method.data.test if method.on_m1_features else experiment.data().test
            matrices["generative"] = confusion(generative_classifier(method.module), test)
        show(name, epoch, matrices, floor)
        found[name] = matrices
    return found


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, help="a semi-supervised results folder")
    p.add_argument("--runs", help="run names, comma-separated (default: every run with a "
                   "checkpoint), e.g. m2-n100-seed2")
    p.add_argument("--data-dir", help="where the dataset is (default: the folder's own)")
    p.add_argument("--floor", type=float, default=0.1,
                   help="list the cells holding at least this share of their class (0.1)")
    p.add_argument("--recorded", action="store_true",
                   help="print the q(y|x) matrix each run's result.json kept from its best "
                   "validation epoch instead of scoring its newest checkpoint")
    args = p.parse_args(argv)
    runs = [r for r in (args.runs or "").split(",") if r] or None
    if args.recorded:
        recorded(args.folder, runs, args.floor)
        return
    torch.set_num_threads(1)
    torch.manual_seed(0)  # the generative classifier's ELBOs draw z
    report(args.folder, runs, args.data_dir, args.floor)


if __name__ == "__main__":
    main()
