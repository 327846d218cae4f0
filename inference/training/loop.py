"""Stochastic variational inference over minibatches (Kingma & Welling 2014, Algorithm 1).

Each step draws a minibatch of M datapoints, evaluates the objective's N/M-scaled estimator
``differentiable_loss(model, guide, batch)``, back-propagates, and takes a torch optimizer step
over the model's parameters — the same update as ``pyro.infer.SVI`` with module-local
parameters (Pyro's ``ELBOModule`` pattern).

This module works on objects: a model, an :class:`~aevb.inference.objectives.Objective`, an
:class:`~aevb.inference.training.engines.Engine`, :class:`~aevb.inference.batching.Split` s and
:class:`LoopOptions`. It knows no config file, dataset name or command line; the face
(:mod:`aevb.runs`) builds these objects and calls :func:`run_epochs`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from pyro import poutine
from tqdm.auto import tqdm

from aevb.inference.batching import Split
from aevb.inference.errors import ConfigError, DataError, DivergenceError, RunDirError
from aevb.inference.evaluation.likelihood import mean_elbo
from aevb.inference.objectives import (
    IncompatibleObjective,
    KLSchedule,
    Objective,
    objective_for_model,
)
from aevb.models.base import Batch

from . import distributed
from .checkpoint import save_checkpoint
from .distributed import SINGLE, DistContext
from .engines import Engine
from .metrics import MetricsLog

log = logging.getLogger("aevb")

LOG_INTERVAL = 50  # steps between progress-bar updates (the only host reads of the loss)


def resolve_device(name: str) -> torch.device:
    """The torch device of a config's ``device`` (``auto``: CUDA where available, else the CPU)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} was asked for but CUDA is not available here; "
                          f"use device=cpu or device=auto")
    return device


def check_data(model, splits, source: str | None = None) -> None:
    """``model.check_data`` (where the model has one) on every split's observations; the error
    names ``source`` (the data's file or folder) where it is given."""
    check = getattr(model, "check_data", None)
    if check is None:
        return
    try:
        for split in splits:
            if split is not None:
                check(split.x)
    except ValueError as exc:
        raise DataError(f"{source}: {exc}" if source else str(exc)) from None


def check_scaling(model, split: Split, batch_size: int) -> None:
    """Refuse a model whose observed sites do not carry the N/M scale of the data plate
    (Kingma & Welling 2014, eq. 8) on a training minibatch of ``split``: a plain
    ``pyro.plate("data", M)`` trains on minibatches as if the batch were the whole dataset,
    silently. The random stream is left untouched."""
    with torch.random.fork_rng(devices=[]), poutine.block(), torch.no_grad():
        batch = next(split.batches(batch_size, scaled=True))
        if batch.num_data == len(batch):
            return
        expected = batch.num_data / len(batch)
        guide = poutine.trace(model.guide).get_trace(batch)
        trace = poutine.trace(poutine.replay(model.model, trace=guide)).get_trace(batch)
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or not site["is_observed"]:
            continue
        scale = float(site["scale"]) if not torch.is_tensor(site["scale"]) else \
            float(site["scale"].flatten()[0])
        if abs(scale - expected) > 1e-6 * expected:
            raise ConfigError(
                f"observed site {name!r} has scale {scale:g}, but a minibatch of {len(batch)} "
                f"out of {batch.num_data} datapoints needs N/M = {expected:g}: put the model's "
                f"and the guide's per-datapoint sites inside `with self.data_plate(batch):` (or "
                f"pyro.plate('data', batch.num_data, subsample=batch.index)), not "
                f"pyro.plate('data', {len(batch)})")


#: elements of one training step's largest tensors (k x M x pixels) times this many float32
#: copies (the logits, their softplus and gradient, the broadcast observations)
STEP_COPIES = 4


def memory_budget(device: torch.device) -> int:
    """Bytes one step may use: the GPU's memory, or this machine's RAM."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def check_memory(num_particles: int, batch_size: int, x_shape, device: torch.device) -> None:
    """Refuse a step that cannot fit: ``num_particles`` samples of ``batch_size`` observations
    of ``x_shape`` need at least k·M·D·4 bytes several times over (:data:`STEP_COPIES`)."""
    elements = num_particles * batch_size * math.prod(x_shape)
    need, have = elements * 4 * STEP_COPIES, memory_budget(device)
    if need > have:
        raise ConfigError(
            f"num_particles={num_particles} with train.batch_size={batch_size} needs about "
            f"{need / 2**30:.3g} GiB per step for observations of shape {list(x_shape)} (k x M x "
            f"pixels x 4 bytes x {STEP_COPIES}), more than the {have / 2**30:.3g} GiB of "
            f"{device.type}; lower num_particles or train.batch_size")


def prepare_objective(name: str, num_particles: int, model, batch: Batch,
                      schedule: KLSchedule | None = None, **options) -> Objective:
    """The objective ``name`` adapted to ``model`` (with the KL weight of ``schedule`` where one
    is active), or a :class:`ConfigError` saying why it cannot train it — before anything is
    trained or written.

    The dry run also lets Pyro guess the plate nesting (which draws random numbers) now, so a
    fresh run and a resumed one consume the random stream identically.
    """
    try:
        objective = objective_for_model(name, num_particles, model, batch, **options)
        if schedule is not None and schedule.active:
            objective = objective.with_kl_weight(schedule.handler())
        with buffers_kept(model):  # no backward
            objective.differentiable_loss(model.model, model.guide, batch)
    except IncompatibleObjective as exc:
        raise ConfigError(str(exc)) from None
    except (ValueError, NotImplementedError) as exc:
        raise ConfigError(f"elbo={name} cannot train this model: {exc}") from None
    return objective


@contextlib.contextmanager
def forked_rng(device: torch.device, seed: int):
    """Draws from ``seed`` that leave the random stream (of the CPU and of ``device``) as it
    was: a probe or a learning curve changes no training step."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def buffers_kept(model):
    """Put back the buffers that a pass updates (VQ-VAE's EMA codebook) when it ends: a dry run
    or a probe must not train."""
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for n, b in model.named_buffers():
                b.copy_(buffers[n])


class DivergenceGuard:
    """Stops a run whose training left the finite, plausible range, before the epoch is saved
    (so the last good checkpoint is never rotated away).

    Checked after every epoch: the training objective and the validation ELBO are finite, every
    parameter is finite (non-finite gradients turn them into NaN), and the ELBO of a fixed probe
    of :data:`PROBE_SIZE` training images (the same pixels every time) is not below the
    untrained model's by more than :data:`FACTOR` times its size: an ELBO of −7·10⁹ nats per
    image, where the untrained model has −550, is a learning rate far too large, not a model.

    :param reference: the probe's ELBO under the untrained model (kept in the checkpoints, so a
        resumed run compares with the same figure); ``None``: measured now.
    """

    PROBE_SIZE = 200
    FACTOR = 10.0

    def __init__(self, model, train: Split, seed: int, reference: float | None = None):
        n = min(self.PROBE_SIZE, len(train))
        y = train.y[:n] if train.y is not None else None
        self.model, self.seed = model, seed
        self.probe = Split(train.x[:n], y, train.dynamic)
        self.reference = self.probe_elbo() if reference is None else reference

    def probe_elbo(self) -> float:
        with forked_rng(self.probe.x.device, self.seed), buffers_kept(self.model), \
                torch.no_grad():
            self.model.eval()
            try:
                return mean_elbo(self.model, self.probe)
            finally:
                self.model.train()

    @property
    def floor(self) -> float:
        return self.reference - self.FACTOR * max(abs(self.reference), 1.0)

    def check(self, row: dict) -> None:
        """Raise a :class:`DivergenceError` (its message says what left the range) or return."""
        if not math.isfinite(row["train_objective"]):
            raise DivergenceError(f"the training objective is {row['train_objective']}")
        bad = [n for n, p in self.model.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            raise DivergenceError(f"parameters became NaN or infinite ({', '.join(bad[:3])}"
                                  f"{', ...' if len(bad) > 3 else ''}): the gradients were not "
                                  f"finite")
        probe = self.probe_elbo()
        if not math.isfinite(probe) or probe < self.floor:
            raise DivergenceError(f"the ELBO of {len(self.probe)} training images is {probe:.4g} "
                                  f"nats per image, far below the untrained model's "
                                  f"{self.reference:.4g} (the floor is {self.floor:.4g})")


def kl_clock(schedule: KLSchedule, objective: Objective, epoch: int
             ) -> Callable[[float], None] | None:
    """The per-step update of the objective's KL weight in ``epoch`` (None without one)."""
    handler = objective.kl_weight
    if handler is None:
        return None

    def on_step(fraction: float) -> None:
        handler.weight = schedule.weight(epoch - 1 + fraction)
    return on_step


def train_epoch(model, engine: Engine, split: Split, batch_size: int,
                progress: bool = True, desc: str = "", ctx: DistContext = SINGLE,
                shuffle: torch.Generator | None = None,
                on_step: Callable[[float], None] | None = None) -> dict:
    """One pass over ``split`` with ``engine``'s steps; returns the per-datapoint objective, time
    and throughput. The running loss stays on the device; it is read every
    :data:`LOG_INTERVAL` steps for the progress bar, and once at the end.

    Across ranks (``ctx.active``) each step takes the rank's shard of a global minibatch of
    ``batch_size`` drawn with the ``shuffle`` generator (identical on every rank; see
    :func:`~aevb.inference.training.distributed.shard_batches`), and the figures are those of
    the global batches, averaged over the ranks once at the end of the epoch.
    """
    model.train()
    num_data = len(split)
    total = torch.zeros((), device=split.x.device)
    steps = 0
    start = time.perf_counter()
    bar = tqdm(total=num_data, disable=not progress, unit="img", desc=desc, leave=False)
    if ctx.active:
        assert shuffle is not None, "data-parallel epochs need the ranks' common shuffle generator"
        batches = distributed.shard_batches(split, batch_size, ctx, shuffle)
    else:
        batches = ((b, 1.0) for b in split.batches(batch_size, shuffle=True, scaled=True))
    num_steps = -(-num_data // batch_size)
    with engine.epoch():
        for batch, weight in batches:
            if on_step is not None:
                on_step((steps + 1) / num_steps)
            total += engine.step(batch, weight=weight).to(total.device)
            steps += 1
            if progress and steps % LOG_INTERVAL == 0:
                bar.update(LOG_INTERVAL * batch_size)
                elapsed = time.perf_counter() - start
                bar.set_postfix(objective=f"{-float(total) / steps / num_data:.2f}",
                                img_s=f"{bar.n / elapsed:.0f}")
    total = distributed.mean_over_ranks(total, ctx)
    if split.x.device.type == "cuda":
        torch.cuda.synchronize(split.x.device)
    bar.update(num_data - bar.n)
    bar.close()
    seconds = time.perf_counter() - start
    value = -float(total) / steps / num_data
    return {"train_objective": value, "seconds": seconds, "images_per_s": num_data / seconds}


@dataclass
class LoopOptions:
    """How :func:`run_epochs` trains.

    :param epochs: train until this epoch (counting the ones a resumed run has done).
    :param batch_size: M, the global minibatch size.
    :param seed: the seed data-parallel ranks derive their noise streams from.
    :param keep_checkpoints: newest checkpoints kept in ``run_dir/checkpoints``.
    :param lr_at: the learning rate of each epoch (a schedule of
        :mod:`~aevb.inference.training.schedules`), set at the epoch's start; ``None`` leaves the
        optimizer's.
    """

    epochs: int
    batch_size: int = 128
    progress: bool = True
    keep_checkpoints: int = 2
    tensorboard: bool = True
    seed: int = 0
    lr_at: Callable[[int], float] | None = None


def run_epochs(model, objective: Objective, engine: Engine, train: Split, valid: Split | None,
               run_dir: Path | None, options: LoopOptions, *, start_epoch: int = 0,
               schedule: KLSchedule | None = None, record: dict | None = None,
               row_info: dict | None = None, ctx: DistContext = SINGLE,
               reference: float | None = None, tracked: dict[str, Split] | None = None,
               sinks: tuple = ()) -> list[dict]:
    """Train from ``start_epoch`` + 1 to ``options.epochs``; after each epoch (on the main rank)
    append the metrics row (``row_info``, the epoch's figures, the validation ELBO where there
    is a ``valid`` split) to ``run_dir/metrics.jsonl`` and write a checkpoint holding
    ``record`` (the run's config). Returns every metrics row of the run. With ``run_dir=None``
    nothing is written.

    An epoch that diverges (:class:`DivergenceGuard`; ``reference`` is the untrained model's
    probe ELBO a resumed run saved) raises a :class:`DivergenceError` naming the epoch, and is
    neither recorded nor saved.

    ``tracked``: further splits (``{"train": ..., "test": ...}``) whose mean ELBO each row
    records as ``NAME_elbo``, with its own seeded draws (training's random stream is left as
    it was, so tracking changes no trained parameter). ``sinks`` receive every row as the
    metrics log writes it (:class:`~aevb.inference.training.metrics.MetricsLog`)."""
    schedule = schedule or KLSchedule()
    guard = DivergenceGuard(model, train, options.seed, reference)
    metrics = None
    if ctx.is_main and run_dir is not None:
        metrics = MetricsLog(run_dir, options.tensorboard, sinks)
        metrics.truncate(start_epoch)  # rows written after the checkpoint we continue from
    rows: list[dict] = []
    for epoch in range(start_epoch + 1, options.epochs + 1):
        shuffle = None
        if ctx.active:  # every rank's noise stream and the common permutation, from the epoch
            distributed.seed_epoch(options.seed, epoch, ctx)
            shuffle = distributed.shuffle_generator(options.seed, epoch)
        row = {"epoch": epoch, **(row_info or {}), "ranks": ctx.world_size}
        if options.lr_at is not None:
            row["lr"] = options.lr_at(epoch)
            engine.set_lr(row["lr"])
        try:
            row |= train_epoch(model, engine, train, options.batch_size,
                               options.progress and ctx.is_main,
                               desc=f"epoch {epoch}/{options.epochs}", ctx=ctx, shuffle=shuffle,
                               on_step=kl_clock(schedule, objective, epoch))
            if objective.kl_weight is not None:
                row["kl_weight"] = objective.kl_weight.weight
            guard.check(row)
            if ctx.is_main and valid is not None:
                row["valid_elbo"] = mean_elbo(model, valid)
                if not math.isfinite(row["valid_elbo"]):
                    raise DivergenceError(f"the validation ELBO is {row['valid_elbo']}")
            if ctx.is_main:
                row |= track(model, tracked or {}, options.seed)
        except DivergenceError as exc:
            raise _diverged(exc, epoch, start_epoch, run_dir, row) from None
        except ValueError as exc:  # a distribution refusing NaN parameters (validation on)
            if "invalid values" not in str(exc):
                raise
            raise _diverged(DivergenceError("parameters became NaN or infinite"), epoch,
                            start_epoch, run_dir, row) from None
        if not ctx.is_main:  # ranks other than 0 go on to the next epoch's first all-reduce
            continue
        rows.append(row)
        if metrics is not None:
            try:
                metrics.append(row)
                save_checkpoint(run_dir, epoch, model, engine,
                                record or {}, options.keep_checkpoints,
                                extra={"reference_elbo": guard.reference})
            except OSError as exc:
                raise RunDirError(
                    f"could not write epoch {epoch}'s checkpoint or metrics in {run_dir}: "
                    f"{exc.strerror or exc}; {_kept(epoch - 1, start_epoch, run_dir)}"
                ) from None
        log.info("epoch %d: train %s %.2f, %s, %.1f s", epoch, objective.name,
                 row["train_objective"], f"valid ELBO {row['valid_elbo']:.2f} nats"
                 if valid is not None else "no validation split", row["seconds"])
    return metrics.rows() if metrics is not None else rows


def track(model, splits: dict[str, Split], seed: int) -> dict[str, float]:
    """``{NAME_elbo: mean ELBO}`` of each split, drawn from ``seed`` inside a fork of the random
    stream."""
    if not splits:
        return {}
    with forked_rng(next(iter(splits.values())).x.device, seed):
        return {f"{name}_elbo": mean_elbo(model, split) for name, split in splits.items()}


def _kept(last: int, start_epoch: int, run_dir: Path | None) -> str:
    if run_dir is None:
        return "nothing was written"
    if last >= 1:
        return (f"the checkpoint of epoch {last} is kept; continue from it with "
                f"`aevb train --resume {run_dir}`")
    return f"no earlier epoch was saved; start it over with `aevb train --resume {run_dir}`"


def _diverged(exc: DivergenceError, epoch: int, start_epoch: int, run_dir: Path | None,
              row: dict) -> DivergenceError:
    lr = row.get("lr")
    fix = f"optim.lr={lr / 10:g}" if isinstance(lr, int | float) else "a lower optim.lr"
    where = _kept(epoch - 1, start_epoch, run_dir).replace("`aevb train --resume "
                                                            f"{run_dir}`",
                                                            f"`aevb train --resume {run_dir} "
                                                            f"{fix}`")
    return DivergenceError(f"training diverged in epoch {epoch}: {exc}. Epoch {epoch} was not "
                           f"saved; {where} (a smaller learning rate; or check the data)")
