"""Which test images q(y|x) is scored on: the grey levels or one fixed binarization of each.

Under dynamic binarization every training batch draws fresh binary pixels from the grey levels,
and the runner's validation and test splits are binarized once from a fixed seed (the splits the
log-likelihood evaluation reads). A classifier scored on those sees one random corruption of each
test image. This script takes the latest checkpoint of every pixel-space run (``m2``,
``baseline``) in a semi-supervised results folder and scores it both ways on the full test set:
on the once-binarized images, and on their grey levels (what ``--classify-from grayscale``, the
runner's default for new folders, scores; Kingma et al.'s code and Pyro's ``ss_vae_M2``
classify grey levels too). Nothing in the folder is changed; the table goes to stdout.

    python benchmarks/classify_from.py benchmarks/results/semisupervised-mnist-zkl-long

The checkpoint is the run's last epoch, not its best validation epoch (only the newest is kept),
so the figures are "after the last epoch", a different selection from the runner's table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from aevb.experiments.semisupervised import Experiment
from aevb.inference.semisupervised import METHODS, accuracy


def rescore(folder: Path, data_dir: str | None = None) -> list[dict]:
    """Test accuracy of each pixel-space run's newest checkpoint on the once-binarized and on
    the grey-level test images."""
    experiment = Experiment.from_folder(folder, data_dir, classify_from="grayscale")
    if experiment.cfg.binarization != "dynamic":
        raise SystemExit(f"{folder}: binarization {experiment.cfg.binarization!r}; only "
                         "dynamically binarized runs have grey levels apart from their test "
                         "images")
    # one experiment (the data loaded once): its splits hold the once-binarized test images,
    # and it classifies grey levels
    binarized_test, grey_test = experiment.data().test, experiment.classified()[1]
    rows = []
    for run_dir in sorted((folder / "runs").iterdir()):
        method_name, labels, seed = run_dir.name.split("-")
        if METHODS.get(method_name).on_m1_features or not (run_dir / "checkpoints").is_dir():
            continue
        method, epoch = experiment.trained(method_name, int(labels[1:]), int(seed[4:]))
        row = {"run": run_dir.name, "epoch": epoch,
               "binarized": accuracy(method.classify, binarized_test),
               "grayscale": accuracy(method.classify, grey_test)}
        rows.append(row)
        print(f"| {row['run']} | {epoch} | {100 * row['binarized']:.2f}% | "
              f"{100 * row['grayscale']:.2f}% | {100 * (row['grayscale'] - row['binarized']):+.2f} |",
              flush=True)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, help="a semi-supervised results folder")
    p.add_argument("--data-dir", help="where the dataset is (default: the folder's own)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print("| run | epoch | test accuracy, once-binarized | grey levels | difference |")
    print("|---|---|---|---|---|")
    rescore(args.folder, args.data_dir)


if __name__ == "__main__":
    main()
