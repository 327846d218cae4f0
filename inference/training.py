"""Stochastic variational inference over minibatches (Kingma & Welling 2014, Algorithm 1).

Each step draws a minibatch of M datapoints, evaluates the objective's N/M-scaled estimator
``differentiable_loss(model, guide, batch)``, back-propagates, and takes a torch optimizer step
over the model's parameters — the same update as ``pyro.infer.SVI`` with module-local
parameters (Pyro's ``ELBOModule`` pattern). A run folder collects the config, metrics,
checkpoints (each epoch, atomic) and, at the end, the evaluation and pictures.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pyro
import torch
from tqdm.auto import tqdm

from models.base import LatentVariableModel

from . import distributed, plots
from .annealing import KLSchedule, KLWeight
from .builder import build_model
from .checkpoint import (
    atomic_write_text,
    checkpoint_epoch,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    restore,
    save_checkpoint,
)
from .config import Config, from_dict, to_dict, to_yaml
from .data import DATASETS, DataBundle, Split, load_data
from .distributed import SINGLE, DistContext
from .engines import Engine, build_engine
from .errors import ConfigError, DataError, RunDirError
from .evaluation import evaluate, mean_elbo
from .metrics import MetricsLog
from .objectives import (
    OBJECTIVE_OPTIONS,
    IncompatibleObjective,
    Objective,
    objective_for_model,
)

log = logging.getLogger("aevb")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} was asked for but CUDA is not available here; "
                          f"use device=cpu or device=auto")
    return device


def check_data(model: LatentVariableModel, data: DataBundle) -> None:
    try:
        for split in (data.train, data.valid, data.test):
            model.check_data(split.x)
    except ValueError as exc:
        raise DataError(str(exc)) from None


def _x_likelihood(cfg: Config) -> str:
    """The likelihood of the images: the spec's for a spec model, else ``model.likelihood``."""
    spec = cfg.model.spec if cfg.model.name == "spec" else None
    if spec:
        observed = spec.get("observed", {})
        for name, var in observed.items():
            if (var.get("data") or name) == "x":
                return var.get("likelihood", "bernoulli")
    return cfg.model.likelihood


def model_label(cfg: Config) -> str:
    """``vae``, ``spec:dlgm2`` or ``/path/my_model.py:MyModel``."""
    if cfg.model.name == "spec" and cfg.model.spec:
        return f"spec:{cfg.model.spec.get('name', 'model')}"
    return cfg.model.name


def likelihood_note(cfg: Config) -> str | None:
    if cfg.data.binarization == "none" and _x_likelihood(cfg) == "bernoulli":
        return ("grayscale data under a Bernoulli likelihood: figures are negative cross-entropies, "
                "not log-likelihoods")
    return None


LOG_INTERVAL = 50  # steps between progress-bar updates (the only host reads of the loss)


def train_epoch(model: LatentVariableModel, engine: Engine, split: Split, batch_size: int,
                progress: bool = True, desc: str = "", ctx: DistContext = SINGLE,
                shuffle: torch.Generator | None = None,
                on_step: Callable[[float], None] | None = None) -> dict:
    """One pass over ``split`` with ``engine``'s steps; returns the per-datapoint objective, time
    and throughput. The running loss stays on the device; it is read every
    :data:`LOG_INTERVAL` steps for the progress bar, and once at the end.

    Across ranks (``ctx.active``) each step takes the rank's shard of a global minibatch of
    ``batch_size`` drawn with the ``shuffle`` generator (identical on every rank; see
    :func:`inference.distributed.shard_batches`), and the figures are those of the global
    batches, averaged over the ranks once at the end of the epoch.
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
    if value != value:  # NaN
        raise FloatingPointError("training diverged (the objective is NaN); lower optim.lr or "
                                 "check the data")
    return {"train_objective": value, "seconds": seconds, "images_per_s": num_data / seconds}


def kl_schedule(cfg: Config) -> KLSchedule:
    return KLSchedule(cfg.kl.beta, cfg.kl.warmup_epochs)


def prepare_objective(cfg: Config, model: LatentVariableModel, batch) -> Objective:
    """The configured objective adapted to ``model`` (with the KL weight of ``cfg.kl`` where
    one is set), or a :class:`ConfigError` saying why it cannot train it — before anything is
    trained or written.

    The dry run also lets Pyro guess the plate nesting (which draws random numbers) now, so a
    fresh run and a resumed one consume the random stream identically.
    """
    schedule = kl_schedule(cfg)
    try:
        options = {k: getattr(cfg, k) for k, owner in OBJECTIVE_OPTIONS.items()
                   if owner == cfg.elbo}
        objective = objective_for_model(cfg.elbo, cfg.num_particles, model, batch, **options)
        if schedule.active:
            objective = objective.with_kl_weight(KLWeight(schedule.weight(1.0)))
        # no backward; buffers a training pass updates (VQ-VAE's EMA codebook) are put back
        buffers = {name: b.clone() for name, b in model.named_buffers()}
        objective.differentiable_loss(model.model, model.guide, batch)
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
    except IncompatibleObjective as exc:
        raise ConfigError(str(exc)) from None
    except (ValueError, NotImplementedError) as exc:
        raise ConfigError(f"elbo={cfg.elbo} cannot train this model: {exc}") from None
    return objective


def kl_clock(cfg: Config, objective: Objective, epoch: int) -> Callable[[float], None] | None:
    """The per-step update of the objective's KL weight in ``epoch`` (None without one)."""
    handler, schedule = objective.kl_weight, kl_schedule(cfg)
    if handler is None:
        return None

    def on_step(fraction: float) -> None:
        handler.weight = schedule.weight(epoch - 1 + fraction)
    return on_step


def default_run_dir(config_path: str | None) -> Path:
    stem = Path(config_path).stem if config_path else "run"
    return Path("runs") / f"{stem}-{datetime.now():%Y%m%d-%H%M%S}"


def _environment(device: torch.device) -> dict:
    return {"torch": torch.__version__, "pyro": pyro.__version__, "python": platform.python_version(),
            "device": str(device), "threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}


def train(cfg: Config, run_dir: Path, *, resume: bool = False, checkpoint: Path | None = None,
          final_evaluation: bool = True, ctx: DistContext | None = None) -> Path:
    """Train as configured into ``run_dir``; with ``resume`` continue from its newest checkpoint
    (or ``checkpoint``) up to ``cfg.train.epochs``. Returns ``run_dir``.

    Every check that can fail (run folder, checkpoint, data, model/data match) runs before
    anything is written, so a refused run leaves existing files as they were.

    Under torchrun (``ctx.active``; see :mod:`inference.distributed`) every rank trains its
    shards with DistributedDataParallel; rank 0 alone reads the checkpoint (and sends it to the
    others), writes the run folder and runs the final evaluation.
    """
    ctx = ctx or distributed.current()
    run_dir = Path(run_dir)
    distributed.check_batch_size(cfg.train.batch_size, ctx)
    payload = None
    if ctx.is_main:
        if resume:
            if not run_dir.is_dir():
                raise RunDirError(f"cannot resume: {run_dir} is not a run folder")
            payload = load_checkpoint(checkpoint or latest_checkpoint(run_dir), map_location="cpu")
        elif run_dir.exists() and any(run_dir.iterdir()):
            raise RunDirError(f"run folder {run_dir} already exists and is not empty; continue it "
                              f"with `aevb train --resume {run_dir}` or choose another --run-dir")
    payload = distributed.broadcast(payload, ctx)
    device = distributed.rank_device(resolve_device(cfg.device), ctx)
    pyro.set_rng_seed(cfg.seed)
    pyro.clear_param_store()
    model = build_model(cfg.model, DATASETS.get(cfg.data.name).x_shape)  # a bad model fails fast
    data = load_data(cfg.data, device)
    model = model.to(device)
    check_data(model, data)
    note = likelihood_note(cfg)
    if note and ctx.is_main:
        warnings.warn(note, stacklevel=2)
    objective = prepare_objective(cfg, model, next(data.valid.batches(2)))
    engine = build_engine(cfg.train.engine, model, objective, cfg.optim.name, cfg.optim.lr,
                          cfg.optim.weight_decay, ctx)
    start_epoch = 0
    if payload is not None:
        start_epoch = restore(payload, model, engine)
    metrics = None
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", to_yaml(cfg))  # on resume: with its overrides
        metrics = MetricsLog(run_dir, cfg.train.tensorboard)
        metrics.truncate(start_epoch)  # rows written after the checkpoint we continue from
    config_dict = to_dict(cfg)
    for epoch in range(start_epoch + 1, cfg.train.epochs + 1):
        shuffle = None
        if ctx.active:  # every rank's noise stream and the common permutation, from the epoch
            distributed.seed_epoch(cfg.seed, epoch, ctx)
            shuffle = distributed.shuffle_generator(cfg.seed, epoch)
        row = {"epoch": epoch, "objective": cfg.elbo, "num_particles": cfg.num_particles,
               "ranks": ctx.world_size}
        row |= train_epoch(model, engine, data.train, cfg.train.batch_size,
                           cfg.train.progress and ctx.is_main,
                           desc=f"epoch {epoch}/{cfg.train.epochs}", ctx=ctx, shuffle=shuffle,
                           on_step=kl_clock(cfg, objective, epoch))
        if objective.kl_weight is not None:
            row["kl_weight"] = objective.kl_weight.weight
        if metrics is None:  # ranks other than 0 go on to the next epoch's first all-reduce
            continue
        row["valid_elbo"] = mean_elbo(model, data.valid)
        metrics.append(row)
        save_checkpoint(run_dir, epoch, model, engine, config_dict, cfg.train.keep_checkpoints)
        log.info("epoch %d: train %s %.2f, valid ELBO %.2f nats, %.1f s", epoch, cfg.elbo,
                 row["train_objective"], row["valid_elbo"], row["seconds"])
    distributed.shutdown(ctx)
    if ctx.active and device.type == "cpu":  # the other ranks are gone: rank 0 takes the cores
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    if final_evaluation and ctx.is_main:
        write_evaluation(model, data, cfg, run_dir, cfg.eval.num_samples, device)
        plots.write_all(model, data, metrics.rows() if metrics else [], run_dir,
                        cfg.eval.num_images)
    return run_dir


def write_evaluation(model, data: DataBundle, cfg: Config, run_dir: Path, num_samples: int,
                     device: torch.device, out: Path | None = None) -> dict:
    result = evaluate(model, data.test, num_samples, cfg.eval.sample_chunk, cfg.eval.batch_size,
                      progress=cfg.train.progress)
    checkpoints = list_checkpoints(run_dir)
    result |= {"split": "test", "data": data.description, "data_source": data.source,
               "epochs_trained": checkpoint_epoch(checkpoints[-1]) if checkpoints else 0,
               "model": model_label(cfg),
               "objective": cfg.elbo, "num_particles": cfg.num_particles,
               "note": likelihood_note(cfg), "environment": _environment(device)}
    atomic_write_text(out or run_dir / "evaluation.json", json.dumps(result, indent=2) + "\n")
    return result


def load_run(run_dir: Path, checkpoint: Path | None = None, device: str | None = None,
             data_overrides: dict | None = None, with_data: bool = True):
    """``(cfg, model, data, device)`` of a saved run, from its newest (or given) checkpoint;
    ``data`` is ``None`` when ``with_data`` is false."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is not a run folder")
    payload = load_checkpoint(checkpoint or latest_checkpoint(run_dir), map_location="cpu")
    cfg = from_dict(payload["config"])
    if device:
        cfg = replace(cfg, device=device)
    if data_overrides:
        cfg = replace(cfg, data=replace(cfg.data, **data_overrides))
    dev = resolve_device(cfg.device)
    data = load_data(cfg.data, dev) if with_data else None
    model = build_model(cfg.model, DATASETS.get(cfg.data.name).x_shape)
    model.load_state_dict(payload["model"])
    return cfg, model.to(dev).eval(), data, dev
