"""A run folder, from a :class:`~aevb.config.Config`: the objects it names, the training loop,
the evaluation and the pictures.

:func:`train` builds the model (or takes the user's object), the data (a registered dataset,
a file, a folder or the user's arrays), the objective and the engine, then hands them to
:func:`aevb.inference.training.run_epochs`, which knows nothing of configs. The folder holds
``config.yaml`` (what ran, defaults resolved), ``run.json`` (the model's class and every
constructor argument, the data, the environment), ``metrics.jsonl``/``.csv``, the checkpoints
(each epoch, atomic), and at the end ``evaluation.json`` and the pictures.
:func:`load_run` brings a run back. The CLI and :mod:`aevb.api` both go through here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import warnings
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import pyro
import torch
from omegaconf import OmegaConf

from aevb.inference.batching import DataBundle, Split
from aevb.inference.cpu import prepare as prepare_device
from aevb.inference.errors import ConfigError, DataError, RunDirError
from aevb.inference.evaluation import evaluate
from aevb.inference.objectives import OBJECTIVE_OPTIONS, Objective
from aevb.inference.training import (
    LoopOptions,
    build_engine,
    check_data,
    check_memory,
    check_scaling,
    distributed,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prepare_objective,
    resolve_device,
    run_epochs,
)
from aevb.inference.training.checkpoint import atomic_write_text, checkpoint_epoch, restore
from aevb.inference.training.distributed import DistContext
from aevb.inference.training.initialization import INITIALIZATIONS
from aevb.inference.training.metrics import dumps
from aevb.inference.training.schedules import SCHEDULES

from . import pictures
from .builder import adopt, build
from .config import OBJECT_PREFIX, Config, from_dict, to_dict, to_yaml
from .data import DATASETS, DataSource, load_data, resolve_defaults, scored
from .lock import claim, contents
from .resume import ResumePlan
from .resume import plan as resume_plan
from .tracking import MLflowTracker, tracked

log = logging.getLogger("aevb")


@dataclass
class Trained:
    """What :func:`train` and :func:`load_run` give back."""

    cfg: Config
    model: torch.nn.Module
    data: DataBundle | None
    device: torch.device
    run_dir: Path
    #: the epoch of the checkpoint the model was loaded from (``None``: the folder's newest)
    epochs_trained: int | None = None


def object_name(model) -> str:
    """``model.name`` recorded for a model object: ``object:module.QualName``."""
    cls = type(model)
    return f"{OBJECT_PREFIX}{cls.__module__}.{cls.__qualname__}"


def _x_likelihood(cfg: Config) -> str | None:
    """The likelihood of the images: the spec's for a spec model, else ``model.likelihood``."""
    spec = cfg.model.spec if cfg.model.name == "spec" else None
    if spec:
        observed = spec.get("observed", {})
        for name, var in observed.items():
            if (var.get("data") or name) == "x":
                return var.get("likelihood", "bernoulli")
    if cfg.model.name == "vae":
        return cfg.model.likelihood or "bernoulli"
    return cfg.model.likelihood


def model_label(cfg: Config) -> str:
    """``vae``, ``spec:dlgm2``, ``/path/my_model.py:MyModel`` or ``object:module.Class``."""
    if cfg.model.name == "spec" and cfg.model.spec:
        return f"spec:{cfg.model.spec.get('name', 'model')}"
    return cfg.model.name


def _binary(split: Split | None) -> bool:
    return split is not None and bool(((split.x == 0) | (split.x == 1)).all())


def likelihood_note(cfg: Config, split: Split | None = None) -> str | None:
    """The caveat of figures that are not log-likelihoods: a Bernoulli likelihood on grayscale
    data (``split``'s values, where given, are not all 0 or 1)."""
    if cfg.data.binarization == "none" and _x_likelihood(cfg) == "bernoulli" and \
            not _binary(split):
        return ("grayscale data under a Bernoulli likelihood: figures are negative cross-entropies, "
                "not log-likelihoods")
    return None


def default_run_dir(name: str | None) -> Path:
    """``runs/NAME-YYYYMMDD-HHMMSS``, the run folder of a run without ``--run-dir``."""
    stem = Path(name).stem if name else "run"
    return Path("runs") / f"{stem}-{datetime.now():%Y%m%d-%H%M%S}"


def environment(device: torch.device) -> dict:
    """What ran: the versions of torch, Pyro and Python, the device, its threads, the GPU."""
    return {"torch": torch.__version__, "pyro": pyro.__version__, "python": platform.python_version(),
            "device": str(device), "threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}


def _source(cfg: Config, data_source: DataSource | None) -> DataSource:
    return data_source if data_source is not None else DATASETS.get(cfg.data.name)


def _model(cfg: Config, x_shape, model, trust_code: bool):
    """``(model, constructor arguments)``: the user's object, or the one ``cfg`` builds."""
    if model is not None:
        return adopt(model), None
    return build(cfg.model, x_shape, trust_code)


def train(cfg: Config, run_dir: Path, *, resume: bool = False, checkpoint: Path | None = None,
          final_evaluation: bool = True, ctx: DistContext | None = None, model=None,
          data_source: DataSource | None = None, trust_code: bool = True) -> Path:
    """Train as configured into ``run_dir`` (see :func:`execute`); returns ``run_dir``."""
    return execute(cfg, run_dir, resume=resume, checkpoint=checkpoint,
                   final_evaluation=final_evaluation, ctx=ctx, model=model,
                   data_source=data_source, trust_code=trust_code).run_dir


def execute(cfg: Config, run_dir: Path, *, resume: bool = False, checkpoint: Path | None = None,
            final_evaluation: bool = True, ctx: DistContext | None = None, model=None,
            data_source: DataSource | None = None, trust_code: bool = True) -> Trained:
    """Train as configured into ``run_dir``; with ``resume`` continue from its newest checkpoint
    (or ``checkpoint``) up to ``cfg.train.epochs``; a run folder stopped before its first
    checkpoint is started over with ``resume``.

    ``model`` is a model object to train instead of the one ``cfg.model`` names (on resume its
    state is loaded into it); ``data_source`` the data handed over as an object.

    Every check that can fail (the settings, the run folder and its lock, the checkpoint and
    what the resume changes (:mod:`aevb.resume`), the data, the model/data match, the
    objective, minibatch scaling) runs before anything is written, so a refused run leaves
    existing files as they were, and a new folder is removed again.

    Under torchrun (``ctx.active``; see :mod:`aevb.inference.training.distributed`) every rank
    trains its shards with DistributedDataParallel; rank 0 alone holds the folder's lock, reads
    the checkpoint (and sends it to the others), writes the run folder and runs the final
    evaluation.
    """
    ctx = ctx or distributed.current()
    run_dir = Path(run_dir)
    distributed.check_batch_size(cfg.train.batch_size, ctx)
    if ctx.is_main and resume and not run_dir.is_dir():
        raise RunDirError(f"cannot resume: {run_dir} is not a run folder")
    device = distributed.rank_device(resolve_device(cfg.device), ctx)
    prepare_device(device)  # on the CPU: a fair share of the cores, a heap that keeps freed memory
    source = _source(cfg, data_source)
    cfg = replace(cfg, data=resolve_defaults(cfg.data, source))  # the record says what ran
    x_shape = source.x_shape(cfg.data)
    if x_shape is not None:
        check_memory(cfg.num_particles, cfg.train.batch_size, x_shape, device)
    if ctx.is_main and cfg.kl.warmup_epochs > cfg.train.epochs:
        warnings.warn(f"kl.warmup_epochs={cfg.kl.warmup_epochs:g} > train.epochs="
                      f"{cfg.train.epochs}: training ends with the KL weight at "
                      f"{cfg.kl.schedule().weight(cfg.train.epochs):.2g}"
                      f", not beta={cfg.kl.beta:g}", stacklevel=2)
    with claim(run_dir) if ctx.is_main else contextlib.nullcontext():
        return _execute(cfg, run_dir, resume, checkpoint, final_evaluation, ctx, model, source,
                        trust_code, device, x_shape)


def _start(cfg: Config, run_dir: Path, resume: bool, checkpoint: Path | None
           ) -> tuple[dict | None, ResumePlan | None]:
    """The checkpoint to continue from and what the resume changes (rank 0, lock held)."""
    if not resume:
        if contents(run_dir):
            how = (f"continue it with `aevb train --resume {run_dir}`" if list_checkpoints(run_dir)
                   else f"it holds no checkpoint (stopped before its first epoch ended): start "
                        f"it over with `aevb train --resume {run_dir}`")
            raise RunDirError(f"run folder {run_dir} already exists and is not empty; {how}, or "
                              f"choose another --run-dir")
        return None, None
    if checkpoint is None and not list_checkpoints(run_dir):
        log.info("%s has no checkpoint yet: starting it over from epoch 0", run_dir)
        return None, None
    payload = load_checkpoint(checkpoint or latest_checkpoint(run_dir), map_location="cpu")
    plan = resume_plan(payload["config"], to_dict(cfg), int(payload["epoch"]), cfg.train.engine)
    for line in plan.describe():
        log.info("resume changes %s", line)
    return payload, plan


def _execute(cfg: Config, run_dir: Path, resume: bool, checkpoint: Path | None,
             final_evaluation: bool, ctx: DistContext, model, source: DataSource,
             trust_code: bool, device: torch.device, x_shape) -> Trained:
    payload, plan = _start(cfg, run_dir, resume, checkpoint) if ctx.is_main else (None, None)
    payload = distributed.broadcast(payload, ctx)
    pyro.set_rng_seed(cfg.seed)
    pyro.clear_param_store()
    arguments = None
    if model is None and x_shape is not None:  # a bad model fails before the data is read
        model, arguments = _model(cfg, x_shape, None, trust_code)
    data = load_data(cfg.data, device, source)
    if x_shape is None:  # known only now
        check_memory(cfg.num_particles, cfg.train.batch_size, data.train.x_shape, device)
    if model is None:
        model, arguments = _model(cfg, data.train.x_shape, None, trust_code)
    else:
        model = adopt(model)
    model = model.to(device)
    check_data(model, [data.train, data.valid, data.test], data.source)
    if payload is None:  # a new run; a resumed one loads its parameters below
        INITIALIZATIONS.get(cfg.train.init)(model, data.train.x)
    note = likelihood_note(cfg, data.train)
    if note and ctx.is_main:
        warnings.warn(note, stacklevel=3)
    schedule = cfg.kl.schedule()
    objective = objective_from_config(cfg, model, next((data.valid or data.train).batches(2)))
    check_scaling(model, data.train, cfg.train.batch_size)
    engine = build_engine(cfg.train.engine, model, objective, cfg.optim.name, cfg.optim.lr,
                          cfg.optim.weight_decay, ctx, cfg.optim.options())
    start_epoch, reference = 0, None
    if payload is not None:
        try:
            start_epoch = restore(payload, model, engine)
        except RuntimeError as exc:  # a state dict of another architecture
            raise ConfigError(f"the checkpoint does not fit this model: "
                              f"{str(exc).splitlines()[0]}") from None
        engine.set_hyperparameters(cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.options())
        reference = payload.get("extra", {}).get("reference_elbo")
    finished = start_epoch == cfg.train.epochs and payload is not None
    if ctx.is_main:
        try:
            atomic_write_text(run_dir / "config.yaml", to_yaml(cfg))  # with the resume's changes
            write_record(run_dir, cfg, model, arguments, data, device, plan)
        except OSError as exc:
            raise RunDirError(f"cannot write in run folder {run_dir}: {exc.strerror}") from None
        if finished:
            log.info("%s has trained all %d epochs; nothing to train", run_dir, start_epoch)
    with tracked(cfg, run_dir, active=ctx.is_main) as tracker:
        _train_and_evaluate(cfg, run_dir, final_evaluation, ctx, model, data, objective, engine,
                            schedule, start_epoch, reference, finished, device, tracker)
    return Trained(cfg, model, data, device, run_dir)


def _train_and_evaluate(cfg: Config, run_dir: Path, final_evaluation: bool, ctx: DistContext,
                        model, data: DataBundle, objective: Objective, engine, schedule,
                        start_epoch: int, reference: float | None, finished: bool,
                        device: torch.device, tracker: MLflowTracker | None) -> None:
    """The epochs and the final evaluation of :func:`execute`, reported to ``tracker`` too."""
    options_ = LoopOptions(cfg.train.epochs, cfg.train.batch_size, cfg.train.progress,
                           cfg.train.keep_checkpoints, cfg.train.tensorboard, cfg.seed,
                           lr_at=None if cfg.optim.schedule == "constant"
                           else SCHEDULES.get(cfg.optim.schedule)(cfg.optim.lr))
    row_info = {"objective": cfg.elbo, "num_particles": cfg.num_particles}
    if cfg.optim.schedule == "constant":
        row_info["lr"] = cfg.optim.lr
    rows = run_epochs(model, objective, engine, data.train, data.valid,
                      run_dir if ctx.is_main else None, options_, start_epoch=start_epoch,
                      schedule=schedule, record=to_dict(cfg), row_info=row_info, ctx=ctx,
                      reference=reference, tracked=tracked_splits(data, cfg),
                      sinks=(tracker,) if tracker is not None else ())
    distributed.shutdown(ctx)
    if ctx.active and device.type == "cpu":  # the other ranks are gone: rank 0 takes the cores
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    if final_evaluation and ctx.is_main and not (finished and evaluated(run_dir, cfg,
                                                                         start_epoch)):
        split_name, split = evaluation_split(data)
        # the pictures first: they take seconds, the k-sample evaluation minutes to an hour
        written = pictures.write_all(model, split, rows, run_dir, cfg.eval.num_images)
        log.info("pictures: %s in %s; now log p(x) with k=%d importance samples on %d %s images",
                 ", ".join(written) or "none for this model", run_dir, cfg.eval.num_samples,
                 len(split), split_name)
        result = write_evaluation(model, split, cfg, run_dir, cfg.eval.num_samples, device,
                                  data_info={"split": split_name, "data": data.description,
                                             "data_source": data.source})
        if tracker is not None:
            tracker.log_evaluation(result)


def tracked_splits(data: DataBundle, cfg: Config) -> dict[str, Split]:
    """The splits of ``cfg.eval.track`` whose ELBO every epoch logs (``train_elbo``, ...)."""
    out = {}
    for name in cfg.eval.track:
        split = getattr(data, name)
        if split is None:
            raise DataError(f"eval.track names {name!r}, but the data has no {name} split")
        out[name] = scored(split, cfg.eval.track_size, cfg.data.binarization_seed + 3)
    return out


def evaluated(run_dir: Path, cfg: Config, epoch: int, pictures: bool = True) -> bool:
    """Whether ``evaluation.json`` already holds the final evaluation of epoch ``epoch`` with
    the configured samples (a resume of a finished run has nothing to redo), and, with
    ``pictures``, the pictures were written too."""
    try:
        result = json.loads((run_dir / "evaluation.json").read_text())
    except (OSError, ValueError):
        return False
    return (result.get("epochs_trained") == epoch
            and result.get("num_samples") == cfg.eval.num_samples
            and (not pictures or (run_dir / "samples.png").is_file()))


def saved_config(run_dir: Path, checkpoint: Path | None = None) -> dict:
    """The configuration a run folder saved: its (newest or given) checkpoint's, or, for a run
    stopped before its first checkpoint, ``config.yaml``'s."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"cannot resume: {run_dir} is not a run folder")
    if checkpoint is not None or list_checkpoints(run_dir):
        return load_checkpoint(checkpoint or latest_checkpoint(run_dir))["config"]
    try:
        saved = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
    except FileNotFoundError:
        raise RunDirError(f"cannot resume: {run_dir} has neither a checkpoint nor a config.yaml; "
                          f"is it a run folder written by `aevb train`?") from None
    except Exception as exc:  # noqa: BLE001 - yaml's errors
        raise RunDirError(f"cannot resume: {run_dir / 'config.yaml'} is not readable YAML "
                          f"({type(exc).__name__}); start a new run") from None
    if not isinstance(saved, dict):
        raise RunDirError(f"cannot resume: {run_dir / 'config.yaml'} is not a config")
    return saved


def objective_from_config(cfg: Config, model, batch) -> Objective:
    """The objective ``cfg`` names (``elbo``, ``num_particles``, its own options, the KL
    weight of ``cfg.kl``) prepared for ``model`` (:func:`~aevb.inference.training.prepare_objective`)."""
    options = {k: getattr(cfg, k) for k, owners in OBJECTIVE_OPTIONS.items() if cfg.elbo in owners}
    return prepare_objective(cfg.elbo, cfg.num_particles, model, batch,
                             cfg.kl.schedule(), **options)


def write_record(run_dir: Path, cfg: Config, model, arguments: dict | None, data: DataBundle,
                 device: torch.device, plan: ResumePlan | None = None) -> None:
    """``run.json``: the model's class and constructor arguments, the data, the environment,
    and ``resumes``: every resume's epoch, time and changed settings (``plan``)."""
    path = run_dir / "run.json"
    resumes: list = []
    if path.is_file():
        try:
            resumes = json.loads(path.read_text()).get("resumes", [])
        except (OSError, ValueError, AttributeError):
            resumes = []
    if plan is not None:
        resumes.append({"epoch": plan.trained, "time": datetime.now().isoformat(timespec="seconds"),
                        "changes": {k: list(v) for k, v in plan.changes.items()}})
    cls = type(model)
    record = {"model": {"name": model_label(cfg), "class": f"{cls.__module__}.{cls.__qualname__}",
                        "arguments": arguments,
                        "parameters": sum(p.numel() for p in model.parameters())},
              "data": data.description | {"source": data.source},
              "environment": environment(device), "resumes": resumes}
    atomic_write_text(path, dumps(record, indent=2, default=str) + "\n")


def evaluation_split(data: DataBundle) -> tuple[str, Split]:
    """The test split, or the validation split of data that has no test split."""
    if data.test is not None:
        return "test", data.test
    if data.valid is None:
        raise DataError("the data has neither a test nor a validation split to evaluate on; "
                        "set data.validation_size or give test data")
    return "valid", data.valid


def refuse_weaker(existing: Path, num_samples: int, num_images: int | None) -> None:
    """Raise a :class:`ConfigError` when writing an evaluation with ``num_samples`` importance
    samples on ``num_images`` images (``None``: all) over ``existing`` would replace a figure
    computed with more of either."""
    try:
        old = json.loads(Path(existing).read_text())
    except (OSError, ValueError):
        return
    k, n = old.get("num_samples", 0), old.get("num_images", 0)
    if num_samples < k or (num_images is not None and num_images < n):
        images = f", {num_images} images" if num_images is not None else ""
        raise ConfigError(f"{existing} holds a k={k} evaluation on {n} images; this one "
                          f"(k={num_samples}{images}) would replace it with a weaker figure: "
                          f"write it elsewhere (--out FILE), or overwrite it (--overwrite)")


def write_evaluation(model, split: Split, cfg: Config, run_dir: Path, num_samples: int,
                     device: torch.device, data_info: dict | None = None,
                     out: Path | None = None, write: bool = True,
                     epochs_trained: int | None = None) -> dict:
    """The figures of :func:`~aevb.inference.evaluation.evaluate` on ``split`` (the importance
    samples seeded from ``cfg.eval.seed``) with what they were computed on, written to
    ``out`` (default ``run_dir/evaluation.json``) when ``write``. ``epochs_trained``: the
    evaluated checkpoint's epoch (default: the newest checkpoint's in ``run_dir``)."""
    prepare_device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.eval.seed)
        result = evaluate(model, split, num_samples, cfg.eval.sample_chunk, cfg.eval.batch_size,
                          progress=cfg.train.progress)
    if epochs_trained is None:
        checkpoints = list_checkpoints(run_dir) if run_dir is not None else []
        epochs_trained = checkpoint_epoch(checkpoints[-1]) if checkpoints else 0
    result |= (data_info or {}) | {
        "epochs_trained": epochs_trained,
        "model": model_label(cfg), "objective": cfg.elbo, "num_particles": cfg.num_particles,
        "seed": cfg.eval.seed, "note": likelihood_note(cfg, split), "environment": environment(device)}
    if write:
        atomic_write_text(out or run_dir / "evaluation.json", dumps(result, indent=2) + "\n")
    return result


def load_run(run_dir: Path, checkpoint: Path | None = None, device: str | None = None,
             data_overrides: dict | None = None, with_data: bool | None = True, model=None,
             trust_code: bool = False, data_source: DataSource | None = None) -> Trained:
    """A saved run from its newest (or given) checkpoint: the config, the model with its
    trained state, and (``with_data``) its data.

    ``model``: an object to load the state into (required for a run of a model object); a
    model defined in a user's file is imported only with ``trust_code``. ``data_source``: data
    handed over as an object (required for a run on in-memory data when ``with_data``;
    ``with_data=None`` loads the data where the run folder says where it is).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is not a run folder")
    payload = load_checkpoint(checkpoint or latest_checkpoint(run_dir), map_location="cpu")
    saved = payload["config"]
    in_memory = saved.get("data", {}).get("name") == "in-memory"
    if with_data is None:
        with_data = data_source is not None or not in_memory
    if in_memory and data_source is None:
        from .data import InMemory

        if with_data:
            raise DataError(f"{run_dir} was trained on in-memory data, which a run folder does "
                            f"not keep; pass the data (aevb.load(..., data=x) or "
                            f"run.evaluate(x))")
        data_source = InMemory(None)  # type: ignore[arg-type]
    cfg = from_dict(saved, data_source)
    if device:
        cfg = replace(cfg, device=device)
    if data_overrides:
        cfg = replace(cfg, data=replace(cfg.data, **data_overrides))
    dev = resolve_device(cfg.device)
    data = load_data(cfg.data, dev, data_source) if with_data else None
    if model is None:
        if cfg.model.name.startswith(OBJECT_PREFIX):
            raise ConfigError(f"{run_dir} holds a model object of class "
                              f"{cfg.model.name[len(OBJECT_PREFIX):]}; pass one to load its "
                              f"state into: aevb.load({str(run_dir)!r}, model=MyModel(...))")
        x_shape = (data.train.x_shape if data is not None else
                   _source(cfg, data_source).x_shape(cfg.data) or _saved_x_shape(run_dir))
        model, _ = build(cfg.model, x_shape, trust_code)
    else:
        model = adopt(model)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:
        raise ConfigError(f"the checkpoint in {run_dir} does not fit this model: "
                          f"{str(exc).splitlines()[0]}") from None
    return Trained(cfg, model.to(dev).eval(), data, dev, run_dir, payload.get("epoch"))


def _saved_x_shape(run_dir: Path) -> tuple[int, ...]:
    record = Path(run_dir) / "run.json"
    try:
        return tuple(json.loads(record.read_text())["data"]["x_shape"])
    except (OSError, KeyError, ValueError):
        raise DataError(f"{run_dir}: the observations' shape is unknown without the data "
                        f"(run.json is missing); pass the data") from None
