"""Data-parallel training on :mod:`torch.distributed` (``torchrun``), NCCL on GPUs, gloo on CPU.

``torchrun --nproc-per-node R -m inference.cli train ...`` (or ``aevb train --nproc R ...``,
which calls torchrun) starts R processes. Each one:

* joins the process group that torchrun's environment describes (:func:`setup`);
* reads its own shard of every global minibatch (:func:`shard_batches`): the global batch of M
  datapoints (``train.batch_size``) is drawn from a permutation that every rank draws
  identically from ``(seed, epoch)``, and rank r takes its r-th slice;
* draws its noise (the reparameterized samples, the dynamic binarization) from its own
  reproducible stream, seeded from ``(seed, epoch, rank)`` at the start of every epoch
  (:func:`seed_epoch`), so a run is reproducible and resumes identically on any number of
  ranks;
* steps :class:`~torch.nn.parallel.DistributedDataParallel` around the objective (see
  :class:`aevb.inference.training.engines.FastEngine`), which averages the gradients over ranks. A rank's
  loss carries the plate's N/m_r and is weighted by m_r·R/M, so the average over ranks is the
  paper's N/M estimator of the whole global batch (Kingma & Welling 2014, eq. 8): the same
  figures as one process training on batches of M.

Rank 0 alone writes logs, metrics, checkpoints and pictures, and runs the final evaluation;
a checkpoint holds no rank-specific state, so it resumes on any number of ranks.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from aevb.inference.errors import ConfigError
from aevb.models.base import Batch


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank, the number of ranks, its local rank on the node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistContext()


def launched_by_torchrun() -> bool:
    """Whether this process is a rank that ``torchrun`` started."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def current() -> DistContext:
    """This process's context: torch.distributed's group if one is initialized, else one rank."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(),
                           int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return SINGLE


def setup(device: str = "auto") -> DistContext:
    """Join the process group torchrun's environment describes (NCCL when the ranks use CUDA,
    gloo on CPU); one process without torchrun gets :data:`SINGLE`. Ranks other than 0 log
    warnings only."""
    if not launched_by_torchrun():
        return SINGLE
    if not dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        if cuda:
            if local_rank >= torch.cuda.device_count():
                raise ConfigError(f"local rank {local_rank} has no GPU: this node has "
                                  f"{torch.cuda.device_count()}; lower --nproc-per-node")
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if cuda else "gloo")
    ctx = current()
    if not ctx.is_main:
        logging.getLogger("aevb").setLevel(logging.WARNING)
    return ctx


def rank_device(device: torch.device, ctx: DistContext) -> torch.device:
    """The rank's GPU (``cuda:LOCAL_RANK``) when training on CUDA, else ``device``."""
    if ctx.active and device.type == "cuda":
        return torch.device("cuda", ctx.local_rank)
    return device


def shutdown(ctx: DistContext) -> None:
    """Tear the process group down after training (a no-op in one process)."""
    if ctx.active and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def broadcast(obj, ctx: DistContext):
    """Rank 0's ``obj`` on every rank (pickled; for small things such as a run folder's name)."""
    if not ctx.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_over_ranks(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """The mean of a number over all ranks (itself when not distributed)."""
    if not ctx.active:
        return value
    value = value.clone()
    dist.all_reduce(value)
    return value / ctx.world_size


def _derive(*keys: int) -> int:
    return int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0] >> 1)


def seed_epoch(seed: int, epoch: int, ctx: DistContext) -> None:
    """Seed the rank's noise stream for ``epoch`` from ``(seed, epoch, rank)``."""
    torch.manual_seed(_derive(seed, epoch, ctx.rank))


def shuffle_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of the epoch's permutation, identical on every rank."""
    return torch.Generator().manual_seed(_derive(seed, epoch, 2**31))


def check_batch_size(batch_size: int, ctx: DistContext) -> None:
    """Refuse a global batch size that the ranks cannot split evenly."""
    if ctx.active and batch_size % ctx.world_size:
        raise ConfigError(f"train.batch_size={batch_size} is the global minibatch and must be a "
                          f"multiple of the {ctx.world_size} ranks; use e.g. "
                          f"train.batch_size={batch_size - batch_size % ctx.world_size or ctx.world_size}")


def shard_batches(split, batch_size: int, ctx: DistContext, generator: torch.Generator
                  ) -> Iterator[tuple[Batch, float]]:
    """Rank ``ctx.rank``'s shards of the global minibatches of ``batch_size``, as
    ``(batch, weight)``: the weight m_r·R/M makes the mean of the ranks' N/m_r-scaled losses the
    N/M-scaled loss of the global batch. A last global batch smaller than R (at most R−1
    datapoints) is skipped, as no rank may have an empty shard."""
    n = len(split)
    order = torch.randperm(n, generator=generator).to(split.x.device)
    for start in range(0, n, batch_size):
        global_idx = order[start:start + batch_size]
        if len(global_idx) < ctx.world_size:
            break
        idx = torch.tensor_split(global_idx, ctx.world_size)[ctx.rank]
        x = split.x[idx]
        if split.dynamic:
            x = torch.bernoulli(x)
        weight = len(idx) * ctx.world_size / len(global_idx)
        yield Batch(x, split.y[idx], idx, n), weight
