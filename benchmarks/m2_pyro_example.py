"""aevb's M2 against Pyro's own ``examples/vae/ss_vae_M2.py``, each at its own settings, side by
side in one process: seconds per training epoch over the same images.

Pyro's example (Kingma et al. 2014's M2 with enumeration and the auxiliary loss) is imported
from the folder you name with ``--pyro-examples`` (a copy of ``pyro/examples/vae``; its code is
not part of aevb, and nothing else is imported from there). It is built as its ``main`` builds
it at its defaults: z of 50, one hidden layer of 500 softplus units, ``TraceEnum_ELBO`` with y
enumerated in parallel, the auxiliary SVI with multiplier 46, Adam (lr 0.00042, beta1 0.9),
batch 200; an epoch is one SVI step of each loss per batch, over ceil(N_l / 200) labelled and
ceil(N_u / 200) unlabelled batches. aevb's M2 is the runner's, at the MNIST table's settings
(batch 128 unlabelled + 128 labelled per step, the ``fast`` engine): ceil(N_u / 128) steps.

Both train on the same training images (grayscale in [0, 1], as Pyro's example feeds them).
Trials of ``--steps`` steps alternate in ``--rounds`` rounds; each is turned into seconds per
epoch with its own steps per epoch, and the table gives the medians and the median of the
within-round ratios.

    python benchmarks/m2_pyro_example.py --pyro-examples PATH/TO/pyro/examples/vae \\
        --dataset mnist --data-dir ../shared/data/mnist --labels 100
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import math
import statistics
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from _rounds import alternate

from aevb.experiments.semisupervised import Experiment, ExperimentConfig
from aevb.inference.semisupervised import METHODS, Settings, paired_batches

ROOT = Path(__file__).resolve().parents[1]
PYRO_BATCH = 200


def import_pyro_example(folder: Path):
    """The example's module, with its plotting and data-download helpers stubbed out (the
    benchmark hands it batches; visdom and its plots are not needed)."""
    script = folder / "ss_vae_M2.py"
    if not script.is_file() or not (folder / "utils" / "custom_mlp.py").is_file():
        raise SystemExit(f"--pyro-examples {folder}: no ss_vae_M2.py and utils/custom_mlp.py "
                         "there; give a copy of pyro's examples/vae folder")
    stubs = {"visdom": ["Visdom"],
             "utils.vae_plots": ["mnist_test_tsne_ssvae", "plot_conditional_samples_ssvae"],
             "utils.mnist_cached": ["MNISTCached", "mkdir_p", "setup_data_loaders"]}
    for name, attrs in stubs.items():
        stub = types.ModuleType(name)
        for attr in attrs:
            setattr(stub, attr, None)
        sys.modules[name] = stub
    sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location("pyro_ss_vae_M2", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pyro_example_losses(module):
    import pyro
    from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO, config_enumerate
    from pyro.optim import Adam

    pyro.clear_param_store()
    ss_vae = module.SSVAE(z_dim=50, hidden_layers=[500], config_enum="parallel",
                          aux_loss_multiplier=46)
    optimizer = Adam({"lr": 0.00042, "betas": (0.9, 0.999)})
    guide = config_enumerate(ss_vae.guide, "parallel", expand=True)
    basic = SVI(ss_vae.model, guide, optimizer,
                loss=TraceEnum_ELBO(max_plate_nesting=1, strict_enumeration_warning=False))
    aux = SVI(ss_vae.model_classify, ss_vae.guide_classify, optimizer, loss=Trace_ELBO())
    return [basic, aux]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pyro-examples", type=Path, required=True,
                   help="a copy of pyro's examples/vae folder")
    p.add_argument("--labels", type=int, default=100)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--dataset", default="mnist", choices=["fashion-mnist", "mnist"])
    p.add_argument("--data-dir", default=None)
    a = p.parse_args(argv)
    module = import_pyro_example(a.pyro_examples)
    if a.threads:
        torch.set_num_threads(a.threads)
    exp = Experiment(ExperimentConfig(dataset=a.dataset, data_dir=a.data_dir),
                     ROOT / "runs" / "unused", progress=False)
    data = exp.semi_data(a.labels, seed=0)
    n_l, n_u = len(data.labelled), len(data.unlabelled)

    torch.manual_seed(0)
    settings = Settings(batch_size=128, alpha=1.0, labelled_weight="balanced",
                        z_kl_start=10.0, z_kl_epochs=10.0)
    method = METHODS.get("m2")(data, settings)
    ours = list(itertools.islice(paired_batches(data.unlabelled, method.labelled_stream, 128),
                                 a.steps))
    ours_per_epoch = math.ceil(n_u / 128)

    losses = pyro_example_losses(module)
    grey = data.unlabelled.x[:PYRO_BATCH * a.steps].flatten(1)
    theirs = [grey[i:i + PYRO_BATCH] for i in range(0, len(grey), PYRO_BATCH)]
    labelled = data.labelled.x[:PYRO_BATCH].flatten(1)
    labels = F.one_hot(data.labelled.y[:PYRO_BATCH], 10).float()
    sup_batches, unsup_batches = math.ceil(n_l / PYRO_BATCH), math.ceil(n_u / PYRO_BATCH)

    def aevb_epoch_seconds() -> float:
        t = time.perf_counter()
        with method.optimizer.epoch():
            for unlabelled, lab in ours:
                method.optimizer.step(unlabelled, lab)
        return (time.perf_counter() - t) / len(ours) * ours_per_epoch

    def pyro_epoch_seconds() -> float:
        t = time.perf_counter()
        for xs in theirs:
            for loss in losses:
                loss.step(xs)
        unsup = (time.perf_counter() - t) / len(theirs)
        t = time.perf_counter()
        for loss in losses:
            loss.step(labelled, labels)
        sup = time.perf_counter() - t
        return unsup * unsup_batches + sup * sup_batches

    loops = {"aevb M2 (batch 128 + 128)": aevb_epoch_seconds,
             "Pyro ss_vae_M2.py (batch 200)": pyro_epoch_seconds}
    names = list(loops)
    times, ratios = alternate(loops, a.rounds, (names[0], names[1]))
    print(f"{a.dataset}, {a.labels} labels ({n_l} labelled + {n_u} unlabelled training "
          f"images), {torch.get_num_threads()} threads, median of {a.rounds} rounds x "
          f"{a.steps} steps, extrapolated to one epoch")
    print("| loop | steps per epoch | s/epoch |\n|---|---|---|")
    print(f"| {names[0]} | {ours_per_epoch} | {statistics.median(times[names[0]]):.1f} |")
    print(f"| {names[1]} | {unsup_batches} + {sup_batches} labelled, 2 SVI steps each | "
          f"{statistics.median(times[names[1]]):.1f} |")
    print(f"ratio aevb / Pyro's example (median within-round ratio): "
          f"{statistics.median(ratios):.2f}x (rounds: {', '.join(f'{v:.2f}' for v in ratios)})")


if __name__ == "__main__":
    main()
