"""A two-epoch data-parallel run of a tiny VAE, for ``tests/test_distributed.py``.

Under torchrun: ``python -m torch.distributed.run --nproc-per-node 2 tests/ddp_worker.py OUT``
trains with :class:`~inference.engines.FastEngine` over the ranks and rank 0 saves the
parameters and the epochs' objectives to OUT. :func:`reference` computes the same steps in one
process — the global minibatches' shards with each rank's random stream, their weighted losses
averaged — which is what DistributedDataParallel must reproduce.
"""

from __future__ import annotations

import sys

import torch

from aevb.inference import Split
from aevb.inference.objectives import build_objective
from aevb.inference.training import distributed, train_epoch
from aevb.inference.training.distributed import DistContext
from aevb.inference.training.engines import build_engine
from aevb.models.base import Batch
from aevb.models.vae import VAE

SEED, EPOCHS, BATCH = 3, 2, 32
CASES = [("elbo", 1), ("iwae", 3)]


def case(objective: str, k: int):
    """Model, objective (after its dry run) and data, identical in every process."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(99, 1, 4, 4, generator=gen)  # 99 = 3 x 32 + 3: a last batch of 3 -> 2 + 1
    split = Split(x, torch.zeros(99, dtype=torch.long), dynamic=True)
    torch.manual_seed(0)
    model = VAE((1, 4, 4), z_dim=2, hidden_sizes=(8,))
    obj = build_objective(objective, k)
    with torch.random.fork_rng():
        obj.differentiable_loss(model.model, model.guide, Batch(torch.bernoulli(x[:2]), None))  # plate guess
    return model, obj, split


def run(ctx: DistContext) -> dict:
    out = {}
    for objective, k in CASES:
        model, obj, split = case(objective, k)
        engine = build_engine("fast", model, obj, "adam", 1e-2, ctx=ctx)
        values = []
        for epoch in range(1, EPOCHS + 1):
            distributed.seed_epoch(SEED, epoch, ctx)
            shuffle = distributed.shuffle_generator(SEED, epoch)
            values.append(train_epoch(model, engine, split, BATCH, False, ctx=ctx,
                                      shuffle=shuffle)["train_objective"])
        out[objective] = {"params": {n: p.detach().clone() for n, p in model.named_parameters()},
                          "objective": values}
    return out


def reference(world_size: int) -> dict:
    """The same training in one process: each step sums the ranks' weighted shard losses
    (each drawn under that rank's random stream) and divides by the number of ranks."""
    out = {}
    for objective, k in CASES:
        model, obj, split = case(objective, k)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, foreach=True)
        values = []
        for epoch in range(1, EPOCHS + 1):
            ranks = [DistContext(r, world_size) for r in range(world_size)]
            states, streams = [], []
            for ctx in ranks:
                distributed.seed_epoch(SEED, epoch, ctx)
                states.append(torch.get_rng_state())
                streams.append(distributed.shard_batches(
                    split, BATCH, ctx, distributed.shuffle_generator(SEED, epoch)))
            total, steps = 0.0, 0
            while True:
                losses = []
                for r in range(world_size):
                    torch.set_rng_state(states[r])
                    shard = next(streams[r], None)
                    if shard is None:
                        break
                    batch, weight = shard
                    losses.append(weight * obj.differentiable_loss(model.model, model.guide, batch))
                    states[r] = torch.get_rng_state()
                if len(losses) < world_size:
                    break
                loss = sum(losses) / world_size
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach())
                steps += 1
            values.append(-total / steps / len(split))
        out[objective] = {"params": {n: p.detach().clone() for n, p in model.named_parameters()},
                          "objective": values}
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    ctx = distributed.setup("cpu")
    result = run(ctx)
    if ctx.is_main:
        torch.save(result, sys.argv[1])
    distributed.shutdown(ctx)
