"""M2's training step with :class:`~models.networks.ConcatLinear` against the concatenating
reference, side by side in one process.

Under parallel enumeration of y (Kingma et al. 2014, M2), q(z|x,y) receives x of shape
``(M, 784)`` and the ten one-hot classes of shape ``(10, 1, 10)``. The reference broadcasts and
concatenates them to ``(10, M, 794)`` before the first linear layer, so the 784-column product
runs ten times per image; ``ConcatLinear`` adds the per-input products and broadcasts only the
sum. Both loops run the semi-supervised runner's M2 (``configs/specs/m2.yaml``, the ``fast``
engine, Adam) on the same Fashion-MNIST batches (100 labels, dynamic binarization): one labelled
and one unlabelled batch of ``--batch-size`` per step. Trials of ``--steps`` steps alternate
(the order rotating every round) and the table gives each loop's median ms/step and the median
of the within-round ratios. Before timing, one step of each from the same weights and random
state checks that both give the same loss.

    python benchmarks/m2_enumeration.py                 # 5 rounds of 20 steps, all threads
    python benchmarks/m2_enumeration.py --threads 1 --rounds 3
"""

from __future__ import annotations

import argparse
import copy
import itertools
import time
from contextlib import nullcontext
from pathlib import Path
from unittest import mock

import torch
from _rounds import alternate, table

from aevb.experiments.semisupervised import Experiment, ExperimentConfig
from aevb.inference.semisupervised import METHODS, Settings, paired_batches
from aevb.models.networks import ConcatLinear, flatten_inputs

ROOT = Path(__file__).resolve().parents[1]


def concatenating_forward(self: ConcatLinear, input):
    """The reference: broadcast and concatenate the inputs, then one linear layer."""
    if not isinstance(input, torch.Tensor):
        input = flatten_inputs(input, [(v.shape[-1],) for v in input])
    return torch.nn.functional.linear(input, self.weight, self.bias)


LOOPS = {"concat-linear": nullcontext,
         "reference": lambda: mock.patch.object(ConcatLinear, "forward", concatenating_forward)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-dir", default=None, help="where Fashion-MNIST is (default: the "
                   "runner's search path)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = ExperimentConfig(device=a.device, data_dir=a.data_dir)
    exp = Experiment(cfg, ROOT / "runs" / "unused", progress=False)  # nothing is written there
    data = exp.semi_data(100, seed=0)
    torch.manual_seed(0)
    method = METHODS.get("m2")(data, Settings(batch_size=a.batch_size))
    batches = list(itertools.islice(
        paired_batches(data.unlabelled, method.labelled_stream, a.batch_size), a.steps))
    start = copy.deepcopy(method.module.state_dict())

    def step_loss(loop: str) -> float:
        method.module.load_state_dict(start)
        with LOOPS[loop](), torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            loss = method.optimizer.objective.differentiable_loss(
                method.module.model, method.module.guide, batches[0][0])
        return float(loss.detach())

    same = {loop: step_loss(loop) for loop in LOOPS}
    print(f"one unlabelled-batch loss from the same weights and seed: {same}")

    def trial(loop: str) -> float:
        with LOOPS[loop]():
            t = time.perf_counter()
            for unlabelled, labelled in batches:
                method.optimizer.step(unlabelled, labelled)
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            return (time.perf_counter() - t) / a.steps * 1e3

    loops = list(LOOPS)
    times, ratios = alternate({loop: (lambda loop=loop: trial(loop)) for loop in loops},
                              a.rounds, ("reference", "concat-linear"))
    print(f"M2 training step, batch {a.batch_size} unlabelled + {a.batch_size} labelled, "
          f"{torch.get_num_threads()} threads on {a.device}, median of {a.rounds} rounds x "
          f"{a.steps} steps")
    print(table(times, ratios, ("loop", "ms/step"), "speed-up reference / concat-linear"))


if __name__ == "__main__":
    main()
