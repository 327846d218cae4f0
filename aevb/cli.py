"""The ``aevb`` command line: ``train``, ``evaluate``, ``sample``, ``sweep``, ``experiment``,
``diagnose`` and the uses of a trained model (``interpolate``, ``analogies``, ``impute``).

Examples::

    aevb train --config vae_fashion elbo=iwae num_particles=5
    aevb train --spec dlgm2 elbo=iwae num_particles=5
    aevb train model=path/to/my_model.py:MyModel train.epochs=3
    aevb train --config vae_fashion --data path/to/images/ data.image_size=[32,32]
    aevb train --resume runs/vae_fashion-20261122-101500 train.epochs=20
    aevb evaluate runs/vae_fashion-20261122-101500 --num-samples 5000
    aevb sample runs/vae_fashion-20261122-101500 -n 64
    aevb experiment semisupervised --labels 100,1000 --seeds 3 --epochs 10 --out results/ss
    aevb sweep --config vae_fashion elbo=elbo,iwae num_particles=5 seed=0:3 --out results/est
    aevb sweep ... --executor ray --address auto --mlflow sqlite:///results/mlflow.db
    aevb diagnose gradients runs/vae_fashion-20261122-101500 --estimators reparam,score,iwae5
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import warnings
from dataclasses import replace
from pathlib import Path

from aevb.configs import names as shipped_names
from aevb.inference.errors import AevbError


class Parser(argparse.ArgumentParser):
    """argparse with aevb's one-line errors (``aevb: error: ...``, exit 2)."""

    def error(self, message: str):  # type: ignore[override]
        command = self.prog.removeprefix("aevb").strip()
        where = f"{command}: " if command else ""
        self.exit(2, f"aevb: error: {where}{message} (see `{self.prog} --help`)\n")


def _bounded(kind, low, name: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {name}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {text}")
        return value
    parse.__name__ = name
    return parse


positive = _bounded(int, 1, "an integer >= 1")
natural = _bounded(int, 0, "an integer >= 0")
fraction_or_more = _bounded(float, 0.0, "a number >= 0")


def _positive_float(text: str) -> float:
    value = fraction_or_more(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be > 0, got 0")
    return value


SEMISUPERVISED_SETTINGS = """\
The defaults are the paper's objective (eq. 9, alpha = 0.1 N). The settings of
aevb's MNIST tables, the same for every label count (docs/results/semisupervised-mnist.md):
  --labelled-weight balanced --alpha 1.0 --z-kl-start 10 --z-kl-epochs 10 --y-balance 10"""


class _ExperimentHelp(argparse.RawDescriptionHelpFormatter):
    """``aevb experiment semisupervised --help``: each option's default is
    :class:`~aevb.experiments.semisupervised.ExperimentConfig`'s own, read when the help is
    printed (building the parser imports no experiment)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is not argparse.SUPPRESS or "default" in text:
            return text
        from aevb.experiments.semisupervised import ExperimentConfig

        value = getattr(ExperimentConfig(), action.dest, None)
        if value is None:
            return text
        if isinstance(value, list):
            value = ",".join(map(str, value))
        return f"{text} (default {value})"


def _launch(nproc: int, argv: list[str]) -> int:
    """``aevb train --nproc R ...``: the same command under ``torchrun`` with R ranks on this
    node (``--standalone`` rendezvous); for several nodes call torchrun directly (README)."""
    import subprocess

    if nproc < 1:
        raise AevbError(f"--nproc {nproc}: give the number of ranks (>= 1)")
    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            rest.append(a)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", "-m", "aevb.cli", *rest]
    print("launching:", " ".join(command[1:]), file=sys.stderr)
    return subprocess.call(command)


def _data_overrides(data: str | None) -> list[str]:
    """``--data NAME|FILE|FOLDER``: a dataset name, an array file or an image folder."""
    if not data:
        return []
    from .data import DATASETS

    if data in DATASETS and not Path(data).exists():
        return [f"data.name={data}"]
    path = Path(data).expanduser()
    if not path.exists():
        raise AevbError(f"--data {data}: neither a dataset ({', '.join(DATASETS.names())}) nor an "
                        f"existing file or folder")
    return [f"data.name={'images' if path.is_dir() else 'array'}", f"data.path={path.resolve()}"]


def _trusted(args, saved: dict) -> bool:
    """A run's model file is imported with --trust-model-file, or when the command line names
    the same file itself (``model=FILE.py:Class``)."""
    from aevb.models.loading import absolute_reference

    if getattr(args, "trust_model_file", False):
        return True
    named = [o.split("=", 1)[1] for o in getattr(args, "overrides", [])
             if o.startswith(("model=", "model.name="))]
    return bool(named) and absolute_reference(named[-1]) == saved.get("model", {}).get("name")


def _train(args) -> int:
    from .config import ModelConfig, load_config

    if args.nproc is not None:
        from aevb.inference.training import distributed

        if not distributed.launched_by_torchrun():
            return _launch(args.nproc, args.argv)

    overrides = _data_overrides(args.data) + args.overrides
    trust = True
    if args.resume:
        if args.config or args.spec:
            raise AevbError("--resume continues a run with its saved config and model; drop "
                            "--config/--spec (key=value overrides such as train.epochs=20 are "
                            "allowed)")
        from .builder import model_class
        from .runs import saved_config

        run_dir = Path(args.resume)
        ckpt = Path(args.checkpoint) if args.checkpoint else None
        saved = saved_config(run_dir, ckpt)
        trust = _trusted(args, saved)
        model_class(ModelConfig(name=saved.get("model", {}).get("name", "vae")), trust)
        cfg = load_config(None, overrides, base=saved)
    else:
        cfg = load_config(args.config, overrides, spec=args.spec)  # before torch is imported
        from .runs import default_run_dir

        run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(args.spec or args.config)
        ckpt = None
    from aevb.inference.training import distributed

    from .runs import train

    if args.device:
        cfg = replace(cfg, device=args.device)
    if args.data_dir:
        cfg = replace(cfg, data=replace(cfg.data, data_dir=args.data_dir))
    if args.no_progress:
        cfg = replace(cfg, train=replace(cfg.train, progress=False))
    ctx = distributed.setup(cfg.device)
    run_dir = Path(distributed.broadcast(str(run_dir), ctx))  # rank 0's (time-stamped) name
    if not ctx.is_main:
        train(cfg, run_dir, resume=bool(args.resume), checkpoint=ckpt, ctx=ctx, trust_code=trust)
        return 0
    print(f"run folder: {run_dir}" + (f" ({ctx.world_size} ranks)" if ctx.active else ""),
          file=sys.stderr)
    train(cfg, run_dir, resume=bool(args.resume), checkpoint=ckpt, ctx=ctx, trust_code=trust)
    evaluation = run_dir / "evaluation.json"
    if evaluation.is_file():
        result = json.loads(evaluation.read_text())
        print(f"{result['split']} ELBO {result['elbo']:.2f} nats, IS log-likelihood "
              f"(k={result['num_samples']}) {result['log_likelihood']:.2f} nats, active units "
              f"{result['active_units']} [{result['data']['dataset']}, {result['num_images']} "
              f"{result['split']} images]")
    print(run_dir)
    return 0


def _load(args, **options):
    """The run of ``args.run_dir`` (its newest or ``--checkpoint``), its model file imported
    only with --trust-model-file."""
    from .runs import load_run

    return load_run(Path(args.run_dir), _path(args.checkpoint), args.device,
                    trust_code=args.trust_model_file, **options)


def _evaluate(args) -> int:
    from .runs import evaluation_split, refuse_weaker, write_evaluation

    if args.refine is not None:
        return _amortization(args)
    out = Path(args.out) if args.out else Path(args.run_dir) / "evaluation.json"
    if not args.overwrite:
        refuse_weaker(out, args.num_samples, args.test_size)
    overrides = {"test_size": args.test_size} if args.test_size else None
    if args.data_dir:
        overrides = (overrides or {}) | {"data_dir": args.data_dir}
    run = _load(args, data_overrides=overrides)
    cfg = run.cfg
    cfg = replace(cfg, eval=replace(cfg.eval, sample_chunk=args.sample_chunk or cfg.eval.sample_chunk,
                                    batch_size=args.batch_size or cfg.eval.batch_size),
                  train=replace(cfg.train, progress=not args.no_progress))
    split_name, split = evaluation_split(run.data)
    result = write_evaluation(run.model, split, cfg, Path(args.run_dir), args.num_samples,
                              run.device, {"split": split_name, "data": run.data.description,
                                           "data_source": run.data.source}, out,
                              epochs_trained=run.epochs_trained)
    print(json.dumps({k: result[k] for k in ("num_images", "num_samples", "elbo",
                                             "log_likelihood", "active_units")}))
    return 0


def _amortization(args) -> int:
    from aevb.api import Run
    from aevb.inference.training.checkpoint import atomic_write_text

    overrides = {"test_size": args.test_size} if args.test_size else None
    if args.data_dir:
        overrides = (overrides or {}) | {"data_dir": args.data_dir}
    run = Run(_load(args, data_overrides=overrides))
    result = run.amortization_gap(args.refine, args.refine_lr, args.refine_samples,
                                  args.num_samples)
    out = Path(args.out) if args.out else Path(args.run_dir) / "amortization.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"{result['images']} {result['split']} images: inference gap "
          f"{result['inference_gap']:.2f} nats = amortization {result['amortization_gap']:.2f} "
          f"+ approximation {result['approximation_gap']:.2f} (ELBO {result['elbo_amortized']:.2f}"
          f" -> {result['elbo_refined']:.2f} after {args.refine} steps; log p(x) "
          f"{result['log_likelihood']:.2f}, k={args.num_samples})")
    print(out)
    return 0


def _sample(args) -> int:
    import torch

    from .pictures import save_grid

    if args.by_class:
        from aevb.api import Run
        from aevb.uses.conditional import label_classes

        run = Run(_load(args, with_data=False))
        try:
            classes = label_classes(run.model)
        except ValueError as e:
            raise AevbError(f"--by-class: {e}") from None
        rows = max(1, args.num // classes)
        out = Path(args.out) if args.out else Path(args.run_dir) / f"samples-by-class-{rows}.png"
        save_grid(run.samples_by_class(rows, seed=args.seed), out, nrow=classes)
        print(out)
        return 0
    model = _load(args, with_data=False).model
    if not hasattr(model, "generate"):
        raise AevbError("this model has no generate(n); it cannot draw samples")
    torch.manual_seed(args.seed)
    out = Path(args.out) if args.out else Path(args.run_dir) / f"samples-{args.num}.png"
    with torch.no_grad():
        save_grid(model.generate(args.num), out, nrow=max(1, int(args.num ** 0.5)))
    print(out)
    return 0


def experiment_config(args):
    """The :class:`~aevb.experiments.semisupervised.ExperimentConfig` of ``aevb experiment
    semisupervised``: the options given on the command line, the config's defaults for the
    rest."""
    from dataclasses import fields

    from aevb.experiments.semisupervised import ExperimentConfig

    given = {f.name: getattr(args, f.name) for f in fields(ExperimentConfig)
             if hasattr(args, f.name)}
    if "labels" in given:
        try:
            given["labels"] = [int(v) for v in given["labels"].split(",") if v]
        except ValueError:
            raise AevbError(f"--labels {given['labels']!r}: give comma-separated integers, "
                            f"e.g. 100,1000") from None
    if "methods" in given:
        given["methods"] = [m for m in given["methods"].split(",") if m]
    return ExperimentConfig(**given)


def _experiment(args) -> int:
    from aevb.experiments.semisupervised import Experiment

    cfg = experiment_config(args)
    out = Path(args.out or f"results/semisupervised-{cfg.dataset}")
    executor = _executor(args, cuda=cfg.device != "cpu")
    rows = Experiment(cfg, out, progress=not args.no_progress).run_all(executor)
    print((out / "results.md").read_text(), end="")
    print(out)
    return 0 if rows else 1


def _executor(args, cuda: bool = False):
    """The executor of ``--executor`` (``processes`` where only ``--workers K`` > 1 is given)."""
    from aevb.sweeps import build_executor

    name = args.executor or ("processes" if args.workers > 1 else "local")
    return build_executor(name, workers=args.workers, cuda=cuda, address=args.address,
                          cpus=args.cpus_per_run, gpus=args.gpus_per_run,
                          max_retries=args.max_retries)


def _sweep(args) -> int:
    from aevb.sweeps import Sweep, parse

    if not args.overrides:
        raise AevbError("aevb sweep needs its grid: KEY=V1,V2 ... (e.g. elbo=elbo,iwae "
                        "seed=0:3)")
    fixed, axes = parse(args.overrides)
    if args.data_dir:
        fixed.append(f"data.data_dir={args.data_dir}")
    if args.device:
        fixed.append(f"device={args.device}")
    if args.no_progress:
        fixed.append("train.progress=false")
    reference = dict(t.partition("=")[::2] for t in args.reference.split(",")) \
        if args.reference else None
    engine = Sweep(Path(args.out), axes, fixed, args.config, args.metric, reference=reference,
                   evaluate=not args.no_evaluation, mlflow=args.mlflow,
                   experiment=args.mlflow_experiment)
    rows = engine.run(_executor(args, cuda=(args.device or "auto") != "cpu"),
                      progress=not args.no_progress)
    print((engine.out / "results.md").read_text(), end="")
    print(engine.out)
    return 0 if rows else 1


def _executor_options(p: argparse.ArgumentParser) -> None:
    from aevb.sweeps.executors import EXECUTORS

    p.add_argument("--executor", choices=EXECUTORS.names(),
                   help="where the runs execute: local (this process, one after another), "
                   "processes (--workers K local processes) or ray (a Ray cluster; default: "
                   "local, processes with --workers > 1)")
    p.add_argument("--workers", type=positive, default=1, help="worker processes of "
                   "--executor processes (one GPU each where there are GPUs)")
    p.add_argument("--address", help="--executor ray: the cluster, auto (started here with "
                   "`ray start --head`) or HOST:PORT of its head (default auto)")
    p.add_argument("--cpus-per-run", type=_positive_float, help="--executor ray: CPUs a run "
                   "asks for (default 1)")
    p.add_argument("--gpus-per-run", type=float, help="--executor ray: GPUs a run asks for "
                   "(default 0)")
    p.add_argument("--max-retries", type=int, help="--executor ray: reruns of a run whose "
                   "worker died; each resumes from its checkpoint (default 3)")


def _analogies(args) -> int:
    from aevb.api import Run
    from aevb.uses.conditional import label_classes

    from .pictures import save_grid

    run = Run(_load(args))
    try:
        classes = label_classes(run.model)
    except ValueError as e:
        raise AevbError(str(e)) from None
    out = Path(args.out) if args.out else Path(args.run_dir) / "analogies.png"
    save_grid(run.analogies(args.rows), out, nrow=classes + 1)
    print(out)
    return 0


def _impute(args) -> int:
    from aevb.api import Run
    from aevb.inference.training.checkpoint import atomic_write_text

    from .pictures import save_grid

    run = Run(_load(args))
    report, grid = run.impute(args.images, args.mask, args.sampler, args.steps, args.seed)
    stem = f"impute-{Path(args.mask).stem if args.mask.endswith(('.npy', '.pt')) else args.mask}"
    stem = f"{stem.replace(':', '')}-{args.sampler}"
    out = Path(args.out) if args.out else Path(args.run_dir) / f"{stem}.png"
    save_grid(grid, out, nrow=6)
    atomic_write_text(out.with_suffix(".json"), json.dumps(report, indent=2) + "\n")
    line = (f"missing pixels' squared error {report['squared_error']:.2f} per image (pixel "
            f"means {report['squared_error_pixel_mean']:.2f})")
    if "heldout_log_likelihood" in report:
        line += f", log-likelihood {report['heldout_log_likelihood']:.2f} nats"
    if "heldout_log_likelihood_pixel_mean" in report:
        line += f" (pixel means {report['heldout_log_likelihood_pixel_mean']:.2f})"
    print(line + f"; acceptance {report['acceptance']:.2f}")
    print(out)
    return 0


def _interpolate(args) -> int:
    from aevb.api import Run

    from .pictures import save_grid

    try:
        a, b = (int(v) for v in args.pair.split(","))
    except ValueError:
        raise AevbError(f"--pair {args.pair}: give two image indices, e.g. --pair 3,17") from None
    run = Run(_load(args))
    path = "slerp" if args.slerp else "linear"
    images = run.interpolate(a, b, args.steps, path)
    out = Path(args.out) if args.out else Path(args.run_dir) / f"interpolation-{a}-{b}-{path}.png"
    save_grid(images, out, nrow=args.steps)
    print(out)
    return 0


def _diagnose(args) -> int:
    import torch

    from aevb.inference.evaluation import (
        estimator_objective,
        gradient_statistics,
        parse_estimator,
    )

    from .reports import write_gradient_report

    names = [e for e in args.estimators.split(",") if e]
    if not names:
        raise AevbError("--estimators is empty; give e.g. reparam,score,iwae5")
    for name in names:
        parse_estimator(name)  # before the run is loaded
    run = _load(args)
    model, data = run.model, run.data
    split = data.valid or data.train  # a fixed batch: the first validation (or training) images
    batch = next(split.batches(args.batch_size))
    torch.manual_seed(args.seed)
    model.train()
    objectives = {name: estimator_objective(name, model, batch) for name in names}  # all, first
    rows = []
    for name, objective in objectives.items():
        rows += gradient_statistics(model, objective, batch, args.repeats, name)
    out = Path(args.out) if args.out else Path(args.run_dir) / "diagnostics"
    write_gradient_report(rows, out, f"{run.cfg.data.name}: gradients of the per-datapoint "
                                     f"objective on the first {len(batch)} validation images, "
                                     f"{args.repeats} draws per estimator, model of "
                                     f"{args.run_dir}")
    print((out / "gradients.md").read_text(), end="")
    print(out)
    return 0


def _path(p):
    return Path(p) if p else None


def _run_options(p: argparse.ArgumentParser) -> None:
    """The options of a command that reads a run folder."""
    p.add_argument("--checkpoint", help="checkpoint file (default: the newest)")
    p.add_argument("--device", help="cpu, cuda or auto (default: the run's)")
    p.add_argument("--trust-model-file", action="store_true",
                   help="import the model file the run's config names (runs its code)")


def build_parser() -> argparse.ArgumentParser:
    """The ``aevb`` argument parser with every subcommand."""
    parser = Parser(prog="aevb", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model (or --resume a run)")
    t.add_argument("overrides", nargs="*", help="config overrides key=value, e.g. elbo=iwae")
    t.add_argument("--config", help="YAML config: a path, or the name of a shipped one "
                   f"({', '.join(shipped_names('config'))})")
    t.add_argument("--spec", help="YAML model spec: a path, or the name of a shipped one "
                   f"({', '.join(shipped_names('spec'))}); sets model.name=spec")
    t.add_argument("--data", help="a dataset name (mnist, fashion-mnist, frey-face), an array "
                   "file (.npy/.npz/.pt) or a folder of images")
    t.add_argument("--trust-model-file", action="store_true",
                   help="with --resume: import the model file the run names (runs its code)")
    t.add_argument("--run-dir", help="output folder (default runs/<config>-<time>)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    t.add_argument("--checkpoint", help="with --resume: the checkpoint file to continue from")
    t.add_argument("--device", help="cpu, cuda or auto (default: the config's, auto)")
    t.add_argument("--data-dir", help="folder with the dataset's IDX files")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.add_argument("--nproc", type=positive, help="data-parallel ranks on this node: relaunches the "
                   "command under torchrun (NCCL on GPUs, gloo on CPU)")
    t.set_defaults(func=_train)

    e = sub.add_parser("evaluate", help="test ELBO, IS log-likelihood, active units -> JSON")
    e.add_argument("run_dir")
    e.add_argument("--num-samples", type=positive, default=5000, help="importance samples k (5000)")
    e.add_argument("--sample-chunk", type=positive, help="importance samples per chunk (memory)")
    e.add_argument("--batch-size", type=positive, help="test images per chunk (memory)")
    e.add_argument("--test-size", type=positive, help="evaluate on the first n test images only")
    _run_options(e)
    e.add_argument("--data-dir")
    e.add_argument("--out", help="output JSON (default RUN_DIR/evaluation.json)")
    e.add_argument("--overwrite", action="store_true", help="replace an existing evaluation "
                   "computed with more samples or images")
    e.add_argument("--no-progress", action="store_true")
    e.add_argument("--refine", type=positive, metavar="STEPS", help="the amortization gap "
                   "instead: optimize each image's q for STEPS steps -> RUN_DIR/amortization.json")
    e.add_argument("--refine-lr", type=_positive_float, default=1e-2)
    e.add_argument("--refine-samples", type=positive, default=10,
                   help="reparameterized draws per refinement step")
    e.set_defaults(func=_evaluate)

    s = sub.add_parser("sample", help="a grid of samples from the prior")
    s.add_argument("run_dir")
    s.add_argument("-n", "--num", type=positive, default=64)
    s.add_argument("--out", help="output PNG (default RUN_DIR/samples-N.png)")
    s.add_argument("--seed", type=natural, default=0)
    s.add_argument("--by-class", action="store_true", help="one class per column, N // C rows "
                   "(a model that reads labels: m2, cvae)")
    _run_options(s)
    s.set_defaults(func=_sample)

    an = sub.add_parser("analogies", help="test images' styles decoded with every class "
                                          "(m2, cvae)")
    an.add_argument("run_dir")
    an.add_argument("--rows", type=positive, default=10, help="test images, one per row")
    an.add_argument("--out", help="output PNG (default RUN_DIR/analogies.png)")
    _run_options(an)
    an.set_defaults(func=_analogies)

    i = sub.add_parser("interpolate", help="decode the latent path between two test images")
    i.add_argument("run_dir")
    i.add_argument("--pair", required=True, help="two test-image indices, e.g. 3,17")
    i.add_argument("--steps", type=positive, default=10, help="points on the path (ends too)")
    i.add_argument("--slerp", action="store_true", help="the spherical path, not the line")
    i.add_argument("--out", help="output PNG (default RUN_DIR/interpolation-A-B-PATH.png)")
    _run_options(i)
    i.set_defaults(func=_interpolate)

    m = sub.add_parser("impute", help="fill masked pixels of test images (pseudo-Gibbs or "
                                      "Metropolis-within-Gibbs) -> grid and JSON")
    m.add_argument("run_dir")
    m.add_argument("--mask", default="center",
                   help="center, top, bottom, random:RATE or a .npy/.pt file (1 = observed)")
    m.add_argument("--sampler", default="mwg", choices=["mwg", "pseudo-gibbs"])
    m.add_argument("--steps", type=positive, default=200)
    m.add_argument("--images", type=positive, default=8, help="the first N test images")
    m.add_argument("--seed", type=natural, default=0)
    m.add_argument("--out", help="output PNG (default RUN_DIR/impute-MASK-SAMPLER.png; the "
                   "JSON beside it)")
    _run_options(m)
    m.set_defaults(func=_impute)

    d = sub.add_parser("diagnose", help="diagnostics of a trained run")
    ds = d.add_subparsers(dest="diagnostic", required=True)
    g = ds.add_parser("gradients", help="variance and SNR of encoder/decoder gradients per "
                                        "estimator on a fixed batch -> table and plot")
    g.add_argument("run_dir")
    g.add_argument("--estimators", default="reparam,score,iwae5",
                   help="comma-separated: reparam, meanfield, score, iwaeK, renyiK (default "
                        "reparam,score,iwae5)")
    g.add_argument("--repeats", type=_bounded(int, 2, "an integer >= 2"), default=100,
                   help="gradient draws per estimator (>= 2)")
    g.add_argument("--batch-size", type=positive, default=100, help="images in the fixed batch")
    g.add_argument("--seed", type=natural, default=0)
    _run_options(g)
    g.add_argument("--out", help="output folder (default RUN_DIR/diagnostics)")
    g.set_defaults(func=_diagnose)

    x = sub.add_parser("experiment", help="multi-run experiments with results tables")
    xs = x.add_subparsers(dest="experiment", required=True)
    ss = xs.add_parser("semisupervised", help="M2, M1+M2 and a supervised baseline over label "
                                              "counts and seeds (Kingma et al. 2014)",
                       formatter_class=_ExperimentHelp, epilog=SEMISUPERVISED_SETTINGS)
    # ExperimentConfig's fields: their defaults are its own (a default here would repeat it)
    option = functools.partial(ss.add_argument, default=argparse.SUPPRESS)
    option("--dataset", help="fashion-mnist or mnist")
    option("--labels", help="labelled images, comma-separated")
    option("--seeds", type=positive, help="seeds per (method, labels)")
    option("--epochs", type=positive, help="training epochs of every run")
    option("--methods", help="comma-separated: m2, m1m2, baseline")
    option("--batch-size", type=positive, help="unlabelled images per step")
    option("--lr", type=_positive_float, help="Adam's step size")
    option("--alpha", type=fraction_or_more, help="classification weight, times N")
    option("--labelled-weight", choices=["paper", "balanced"],
           help="labelled images' weight in the generative term: paper (N_labelled, eq. 9) or "
           "balanced (as if replicated to the unlabelled set's size)")
    option("--labelled-batches", choices=["every-step", "once-per-epoch"],
           help="a labelled batch with every unlabelled one (recycling the labelled set), or "
           "each labelled image once per epoch, spread over the epoch and scaled so an epoch's "
           "expected objective is the same (Pyro's ss_vae_M2)")
    option("--m1-epochs", type=positive, help="epochs of M1 (default: --epochs)")
    option("--z-kl-start", type=_positive_float,
           help="M2's weight on KL(q(z|x,y) || p(z)) at the start; above 1 the class is "
           "cheaper in y than in z while it falls to 1 (the paper's objective)")
    option("--z-kl-epochs", type=fraction_or_more,
           help="epochs over which that weight falls linearly to 1")
    option("--weight-prior", type=fraction_or_more, metavar="LAMBDA",
           help="an N(0, I/LAMBDA) prior on every parameter of each method (Kingma et al.'s "
           "code: 1; 0: none)")
    option("--y-balance", type=fraction_or_more, metavar="WEIGHT",
           help="M2: subtract WEIGHT * KL(mean q(y|x) || p(y)) per unlabelled image, the "
           "batch's mean, so that no class's decoder takes over another's images (0: the "
           "paper's objective)")
    option("--init-sd", type=_positive_float, help="draw every parameter from N(0, INIT_SD^2) "
           "(Kingma et al.'s code: 1e-3; default torch's initialization)")
    option("--elbo", choices=["elbo", "meanfield"],
           help="M2's bound, y summed out: KL(q(z|x,y) || p(z)) at the sampled z (elbo, "
           "Pyro's TraceEnum_ELBO) or in closed form (meanfield, Kingma et al.'s code)")
    option("--binarization", choices=["dynamic", "static", "none"],
           help="of the training images")
    option("--classify-from", choices=["grayscale", "binarized"],
           help="under dynamic binarization, classify validation and test images from their "
           "grey levels (as Kingma et al.'s code and Pyro's example) or from one fixed "
           "binarization of each (default: grayscale in a new --out, the folder's own in an "
           "existing one)")
    option("--train-size", type=positive, help="first n training images only (quick runs)")
    option("--test-size", type=positive, help="first n validation and test images only")
    option("--diagnostics-every", type=positive, metavar="EPOCHS",
           help="measure M2's generative classifier on the validation set every EPOCHS epochs "
           "and at the last (it does not change the training)")
    option("--data-dir", help="the dataset's folder (default: downloaded, or the system's)")
    option("--device", help="cpu, cuda, cuda:N")
    ss.add_argument("--out", help="results folder (default results/semisupervised-DATASET)")
    ss.add_argument("--no-progress", action="store_true")
    _executor_options(ss)
    ss.set_defaults(func=_experiment)

    w = sub.add_parser("sweep", help="a grid of runs over config keys (local, processes, Ray) "
                       "-> one table over seeds")
    w.add_argument("overrides", nargs="*", metavar="KEY=VALUES",
                   help="KEY=V1,V2 (an axis), KEY=A:B (integers A..B-1), KEY=V (every run), "
                   "e.g. elbo=elbo,iwae num_particles=5 seed=0:3")
    w.add_argument("--config", help="the config every run starts from (a path or a shipped "
                   "name, e.g. vae_fashion)")
    w.add_argument("--out", required=True, help="the sweep folder (runs/CELL, results.md)")
    w.add_argument("--metric", default="log_likelihood", help="the table's figure (default "
                   "log_likelihood; also elbo, active_units, valid_elbo, ...)")
    w.add_argument("--reference", help="the row of the paired differences, e.g. elbo=elbo")
    w.add_argument("--no-evaluation", action="store_true", help="no final k-sample evaluation "
                   "(then --metric valid_elbo, train_objective, ...)")
    w.add_argument("--mlflow", metavar="URI", help="log every run to MLflow at URI (e.g. "
                   "sqlite:///results/mlflow.db)")
    w.add_argument("--mlflow-experiment", help="the MLflow experiment (default: --out's name)")
    w.add_argument("--data-dir")
    w.add_argument("--device")
    w.add_argument("--no-progress", action="store_true")
    _executor_options(w)
    w.set_defaults(func=_sweep)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"aevb: {category.__name__.replace('UserWarning', 'note')}: {message}",
          file=file or sys.stderr)


class _StderrHandler(logging.StreamHandler):
    """Log lines to whatever ``sys.stderr`` is now (not the stream of the first call); Pyro's
    INFO lines are left out (Pyro sets its logger to INFO whenever it is first imported)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".")[0] == "pyro" and record.levelno < logging.WARNING:
            return False
        return super().filter(record)

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _log_to_stderr() -> None:
    root = logging.getLogger()
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Run the ``aevb`` command line on ``argv`` (default: ``sys.argv``); returns the exit code (2 for a bad
    input, with one line on stderr)."""
    _log_to_stderr()
    warnings.showwarning = _one_line_warning
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, extra = parser.parse_known_args(argv)
        args.argv = argv
        # key=value overrides may come after options (``aevb train --spec F.yaml elbo=iwae``)
        if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-")
                                                        for e in extra):
            args.overrides += extra
        elif extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # --help (0) or a bad option (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return args.func(args)
    except (AevbError, FloatingPointError) as exc:
        print(f"aevb: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the file system (disk full, read-only, permissions)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"aevb: error: {where}{exc.strerror or exc}; nothing already saved was changed",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aevb: interrupted; the last finished epoch's checkpoint is kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
