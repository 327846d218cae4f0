"""M1+M2 on the codes of Kingma et al.'s released M1: is aevb's M1 what holds M1+M2 back?

Kingma et al.'s code (``dpkingma/nips14-ssl``) ships the M1 its M1+M2 reads,
``models/mnist_z_x_50-500-500_longrun``: a VAE of two hidden layers of 500 softplus units and
a 50-dimensional z1, trained for thousands of passes. This script loads that M1's encoder from
a copy of the repository (``--nips14-ssl``; its weights are read as arrays, none of its code is
imported), keeps the dimensions of z1 its ``run_2layer_ssl.py`` keeps (standard deviation of
q's mean above 0.1 over the first 1000 unlabelled images), and trains aevb's ``m1m2`` on those
codes with the runner's data and model selection, and by default the settings of its MNIST grid
(``--labelled-weight balanced --alpha 1.0 --z-kl-start 10 --z-kl-epochs 10``; the runner's
options of the same names change them): the run is an ordinary run folder of ``--out``,
resumable, and the table row is comparable with the runner's M1+M2 rows.

    git clone https://github.com/dpkingma/nips14-ssl /tmp/nips14-ssl
    python benchmarks/m1m2_released_m1.py --nips14-ssl /tmp/nips14-ssl --labels 100 --seed 0 \\
      --epochs 20 --data-dir ../shared/data/mnist \\
      --out benchmarks/results/semisupervised-mnist-m1m2-released
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal

from aevb.experiments.semisupervised import Experiment, ExperimentConfig

RELEASED = Path("models/mnist_z_x_50-500-500_longrun/v.ndict.tar.gz")


def load_ndict(path: Path) -> dict[str, np.ndarray]:
    """An ``anglepy.ndict.savez`` file: a tar.gz of ``arrays.npz`` (arr_0, arr_1, ...) and
    ``names.txt`` (one name per array, in order)."""
    with tarfile.open(path, "r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        arrays = np.load(io.BytesIO(tar.extractfile(members["arrays.npz"]).read()))
        names = tar.extractfile(members["names.txt"]).read().decode().splitlines()
    return {name: arrays[f"arr_{i}"] for i, name in enumerate(names)}


class ReleasedEncoder(nn.Module):
    """q(z1|x) of the released M1: two softplus layers, then the mean and log-variance of z1
    (``anglepy.models.VAE_Z_X``), on the dimensions in ``keep``."""

    def __init__(self, v: dict[str, np.ndarray]):
        super().__init__()
        for name, array in v.items():
            self.register_buffer(name, torch.tensor(array, dtype=torch.float32))
        self.keep = slice(None)

    def posterior(self, x: torch.Tensor) -> Normal:
        h = x.reshape(len(x), -1).T
        h = F.softplus(self.w0 @ h + self.b0)
        h = F.softplus(self.w1 @ h + self.b1)
        mean, logvar = (self.mean_w @ h + self.mean_b).T, (self.logvar_w @ h + self.logvar_b).T
        return Normal(mean[:, self.keep], (0.5 * logvar[:, self.keep]).exp())

    @torch.no_grad()
    def keep_varying(self, x: torch.Tensor) -> Normal:
        """Keep the dimensions of z1 whose posterior mean varies over ``x`` (standard deviation
        above 0.1, as ``run_2layer_ssl.py`` keeps them); q(z1|x) on them."""
        self.keep = slice(None)
        q = self.posterior(x)
        self.keep = q.mean.std(0) > 0.1
        return Normal(q.mean[:, self.keep], q.stddev[:, self.keep])


def released_encoder(p: argparse.ArgumentParser, folder: Path) -> ReleasedEncoder:
    """The released M1's encoder from ``folder``, a copy of ``dpkingma/nips14-ssl``; a one-line
    parser error where it is not there."""
    path = folder / RELEASED
    if not path.is_file():
        p.error(f"--nips14-ssl: {path} not found; give a copy of dpkingma/nips14-ssl")
    return ReleasedEncoder(load_ndict(path))


class ReleasedM1Experiment(Experiment):
    """The runner's experiment with the released M1 in place of one trained here."""

    def __init__(self, cfg: ExperimentConfig, out: Path, encoder: ReleasedEncoder):
        super().__init__(cfg, out, progress=False)
        self.encoder = encoder

    def m1(self, seed: int) -> ReleasedEncoder:
        return self.encoder


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nips14-ssl", type=Path, required=True,
                   help="a copy of github.com/dpkingma/nips14-ssl")
    p.add_argument("--dataset", default="mnist", help="the released M1 was trained on MNIST")
    p.add_argument("--labels", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=20)
    # the runner's settings, at the MNIST grid's values (Kingma et al.'s code: --batch-size 500
    # --lr 3e-4 --labelled-weight paper --alpha 0.1 --z-kl-start 1 --init-sd 1e-3
    # --weight-prior 1, for 3000 epochs)
    p.add_argument("--batch-size", type=int, default=ExperimentConfig.batch_size)
    p.add_argument("--lr", type=float, default=ExperimentConfig.lr)
    p.add_argument("--labelled-weight", default="balanced")
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--z-kl-start", type=float, default=10.0)
    p.add_argument("--z-kl-epochs", type=float, default=10.0)
    p.add_argument("--init-sd", type=float)
    p.add_argument("--weight-prior", type=float, default=0.0)
    p.add_argument("--elbo", default="elbo", choices=["elbo", "meanfield"])
    p.add_argument("--train-size", type=int)
    p.add_argument("--test-size", type=int)
    p.add_argument("--diagnostics-every", type=int, default=1,
                   help="measure M2's generative classifier every this many epochs (the runner's "
                   "option of the same name)")
    p.add_argument("--data-dir")
    p.add_argument("--out", type=Path, default=Path("results/m1m2-released-m1"))
    args = p.parse_args(argv)
    encoder = released_encoder(p, args.nips14_ssl)
    torch.set_num_threads(1)
    cfg = ExperimentConfig(dataset=args.dataset, labels=[args.labels], seeds=1,
                           epochs=args.epochs, methods=["m1m2"], batch_size=args.batch_size,
                           lr=args.lr, alpha=args.alpha, labelled_weight=args.labelled_weight,
                           z_kl_start=args.z_kl_start, z_kl_epochs=args.z_kl_epochs,
                           init_sd=args.init_sd, elbo=args.elbo,
                           weight_prior=args.weight_prior, train_size=args.train_size,
                           test_size=args.test_size, diagnostics_every=args.diagnostics_every,
                           data_dir=args.data_dir, device="cpu")
    experiment = ReleasedM1Experiment(cfg, args.out, encoder)
    unlabelled = experiment.semi_data(args.labels, args.seed).unlabelled.x[:1000]
    encoder.keep_varying(unlabelled)
    print(f"released M1: {int(encoder.keep.sum())} of {len(encoder.keep)} dimensions of z1 kept")
    experiment.claim_folder()
    result = experiment.run("m1m2", args.labels, args.seed)
    print(json.dumps(result))
    print(f"| M1+M2 on the released M1 | {args.labels} | {args.seed} | "
          f"{100 * result['test_accuracy']:.2f}% (epoch {result['best_epoch']}) |")


if __name__ == "__main__":
    main()
