"""The sweep engine: every cell of a grid over config keys is an ordinary run folder, trained
through the same path as ``aevb train`` (:func:`aevb.runs.train`) by an executor of
:mod:`aevb.sweeps.executors`, then one table over the cells.

A sweep folder holds ``sweep.json`` (the config, the fixed overrides, the axes), ``runs/CELL``
(one run folder per cell, named by its coordinates), and the table ``results.md``/``.csv``/
``.png`` (:mod:`aevb.sweeps.table`). Restarted with the same command, the engine skips finished
cells, resumes unfinished ones from their checkpoints, and, when an axis gains values, adds the
cells they make; any other changed setting is refused, naming it (``train.epochs`` may grow:
every cell then trains on from its last checkpoint).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from aevb.inference.errors import ConfigError, RunDirError

from . import grid, table
from .executors import Executor, Local, worker_device

#: the figures a config sweep's table can report: evaluation.json's, the last metrics row's,
#: and the median seconds per epoch
FIGURES = ("log_likelihood", "log_likelihood_stderr", "elbo", "gap", "active_units",
           "reconstruction", "perplexity", "codes_used", "valid_elbo", "train_objective",
           "train_elbo", "test_elbo", "seconds_per_epoch", "images_per_s", "epochs")
#: fixed settings a restart may raise (each cell trains on from its last checkpoint)
GROWABLE = ("train.epochs",)
#: fixed settings that say how or where runs execute, not what they compute: a restart may
#: change them
NEUTRAL = ("train.progress", "device", "data.data_dir", "data.download")


def metrics_rows(run_dir: Path) -> list[dict]:
    """A run folder's per-epoch metrics rows (none before its first epoch)."""
    from aevb.inference.training.metrics import MetricsLog

    return MetricsLog(Path(run_dir), tensorboard=False).rows()


def run_figures(run_dir: Path) -> dict:
    """A run folder's figures: the numbers of ``evaluation.json`` (when there is one), the
    last metrics row's :data:`FIGURES`, ``epochs`` and the median ``seconds_per_epoch``."""
    figures: dict = {}
    evaluation = run_dir / "evaluation.json"
    if evaluation.is_file():
        ev = json.loads(evaluation.read_text())
        figures |= {k: v for k, v in ev.items()
                    if isinstance(v, int | float) and not isinstance(v, bool)}
    rows = metrics_rows(run_dir)
    if rows:
        figures |= {k: v for k, v in rows[-1].items() if k in FIGURES and k not in figures}
        figures["epochs"] = rows[-1]["epoch"]
        figures["seconds_per_epoch"] = statistics.median(r["seconds"] for r in rows)
    return figures


def _finished(run_dir: Path, cfg, evaluate: bool) -> bool:
    """Whether the cell's run has trained all its epochs and (``evaluate``) been evaluated."""
    if evaluate:
        from aevb.runs import evaluated

        return evaluated(run_dir, cfg, cfg.train.epochs, pictures=False)
    from aevb.inference.training import list_checkpoints
    from aevb.inference.training.checkpoint import checkpoint_epoch

    checkpoints = list_checkpoints(run_dir)
    return bool(checkpoints) and checkpoint_epoch(checkpoints[-1]) >= cfg.train.epochs


@dataclass
class TrainTask:
    """One cell: ``aevb train`` of ``config`` with ``overrides`` into ``run_dir``, resumed when
    the folder holds a run; returns ``{"coordinates": ..., "figures": ...}`` (the cell's and
    :func:`run_figures`).

    :param tracking: MLflow settings for the run (``tracking.*`` config keys), with the cell's
        coordinates as its tags."""

    key: str
    run_dir: str
    config: str | None
    overrides: tuple[str, ...]
    coordinates: dict
    evaluate: bool = True
    tracking: dict = field(default_factory=dict)

    def load(self, registries: bool = True):
        """The cell's config (``registries``: see :func:`aevb.config.load_config`)."""
        from aevb.config import load_config

        cfg = load_config(self.config, [*self.overrides,
                                        *(f"tracking.{k}={v}" for k, v in self.tracking.items())],
                          registries=registries)
        if cfg.tracking.mlflow:
            cfg.tracking.tags = {k: str(v) for k, v in self.coordinates.items()}
        cfg.device = worker_device(cfg.device)
        return cfg

    def run(self) -> dict:
        from aevb.lock import contents
        from aevb.runs import train

        cfg = self.load()
        run_dir = Path(self.run_dir)
        if not _finished(run_dir, cfg, self.evaluate):
            resume = run_dir.is_dir() and bool(contents(run_dir))
            train(cfg, run_dir, resume=resume, final_evaluation=self.evaluate)
        return {"coordinates": self.coordinates, "figures": run_figures(run_dir)}


def _fixed_dict(fixed: list[str]) -> dict[str, str]:
    return {k.strip(): v.strip() for k, _, v in (f.partition("=") for f in fixed)}


@dataclass
class Sweep:
    """A grid over config keys (see :mod:`aevb.sweeps.grid`).

    :param out: the sweep folder. :param axes: the grid. :param fixed: overrides of every cell.
    :param config: the config every cell starts from (a name in ``configs/`` or a path).
    :param metric: the table's figure (:data:`FIGURES`). :param seed: the axis the table
        averages over. :param reference: coordinates of the row the paired differences are to.
    :param naming: a cell's run folder name (default: its coordinates, ``elbo=iwae,seed=0``).
    :param evaluate: run each cell's final evaluation (the importance-sampled log p(x)).
    :param mlflow: an MLflow tracking URI: every run logs there, under the experiment
        ``experiment`` (default: the sweep folder's name), tagged with its coordinates.
    """

    out: Path
    axes: list[grid.Axis]
    fixed: list[str] = field(default_factory=list)
    config: str | None = None
    metric: str = "log_likelihood"
    seed: str = "seed"
    reference: dict | None = None
    naming: Callable[[grid.Cell], str] | None = None
    evaluate: bool = True
    mlflow: str | None = None
    experiment: str | None = None

    def __post_init__(self):
        self.out = Path(self.out)
        if self.metric not in FIGURES:
            raise ConfigError(f"--metric {self.metric!r}: not a figure of a run; choose one of "
                              f"{', '.join(FIGURES)}")
        names = [a.name for a in self.axes]
        for key, value in (self.reference or {}).items():
            axis = next((a for a in self.axes if a.name == key), None)
            if axis is None or str(value) not in axis.values:
                raise ConfigError(f"--reference {key}={value}: not a value of the grid's axes "
                                  f"({'; '.join(f'{a.name}: {list(a.values)}' for a in self.axes)})")
        clash = sorted(set(names) & set(_fixed_dict(self.fixed)))
        if clash:
            raise ConfigError(f"{', '.join(clash)} is both an axis and a fixed override")

    @property
    def mlflow_experiment(self) -> str:
        """The MLflow experiment of the sweep's runs (default: the folder's name)."""
        return self.experiment or self.out.name

    # -- the grid -----------------------------------------------------------------------------
    @property
    def by(self) -> list[str]:
        """The table's row coordinates: every axis but the seed's."""
        return [a.name for a in self.axes if a.name != self.seed]

    def cells(self) -> list[grid.Cell]:
        return grid.cells(self.axes)

    def tasks(self) -> list[TrainTask]:
        """One task per cell, every cell's config checked first (a bad value in any cell is
        refused before a run folder is written; keys, values and names in a first pass over
        all cells, before torch is imported, then the checks that need it)."""
        tracking = {}
        if self.mlflow:
            tracking = {"mlflow": self.mlflow, "experiment": self.mlflow_experiment}
        out = []
        for cell in self.cells():
            coordinates = cell.coords
            name = self.naming(cell) if self.naming else cell.name
            task = TrainTask(name, str((self.out / "runs" / name).resolve()), self.config,
                             (*self.fixed, *cell.overrides), coordinates, self.evaluate,
                             tracking)
            task.load(registries=False)
            out.append(task)
        for task in out:
            task.load()
        return out

    # -- the folder -----------------------------------------------------------------------------
    def settings(self) -> dict:
        return {"config": self.config, "fixed": _fixed_dict(self.fixed),
                "axes": {a.name: list(a.values) for a in self.axes}}

    def claim(self) -> None:
        """Check this sweep against the one its folder holds (see the module) and record it."""
        from aevb.inference.training.checkpoint import atomic_write_text

        path = self.out / "sweep.json"
        mine = self.settings()
        if path.is_file():
            saved = json.loads(path.read_text())
            changed = []
            if saved.get("config") != mine["config"]:
                changed.append(f"--config ({saved.get('config')} -> {mine['config']})")
            old, new = saved.get("fixed", {}), mine["fixed"]
            for key in sorted(set(old) | set(new)):
                if old.get(key) == new.get(key) or key in NEUTRAL:
                    continue
                if key in GROWABLE and key in old and key in new and _grows(old[key], new[key]):
                    continue
                changed.append(f"{key} ({old.get(key, 'unset')} -> {new.get(key, 'unset')})")
            old_axes = saved.get("axes", {})
            for key in sorted(set(old_axes) ^ set(mine["axes"])):
                changed.append(f"{key} ({'an axis' if key in old_axes else 'not an axis'} -> "
                               f"{'an axis' if key in mine['axes'] else 'not an axis'})")
            if changed:
                raise RunDirError(f"{self.out} holds a sweep with other settings: "
                                  f"{'; '.join(changed)}; restart it with the same settings "
                                  f"(an axis may gain values) or choose another --out")
            # the folder's record: every value any restart asked for
            mine["axes"] = {k: list(grid.Axis(k, tuple(old_axes[k])).extended(tuple(v)).values)
                            for k, v in mine["axes"].items()}
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(mine, indent=2) + "\n")

    # -- running ------------------------------------------------------------------------------
    def run(self, executor: Executor | None = None, progress: bool = True) -> list[dict]:
        """Every cell (finished ones read back), then the table; returns its rows."""
        tasks = self.tasks()
        self.claim()
        if self.mlflow:
            from aevb.tracking import prepare

            prepare(self.mlflow, self.mlflow_experiment)
        results = execute(tasks, executor or Local(), progress)
        return self.write_table(results)

    def description(self, results: list[dict]) -> str:
        fixed = " ".join(self.fixed) or "none"
        seeds = sorted({r["coordinates"].get(self.seed) for r in results}, key=str)
        return (f"Sweep of config `{self.config or 'defaults'}` (fixed overrides: `{fixed}`) over "
                f"{' × '.join(a.name for a in self.axes)}; {self.metric}: mean ± 95% Student-t "
                f"interval over {self.seed} ({', '.join(map(str, seeds))})"
                + (f", paired differences to {self._reference_text()}" if self.reference else "")
                + ".")

    def _reference_text(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in (self.reference or {}).items())

    def write_table(self, results: list[dict]) -> list[dict]:
        """``runs.csv`` (every run's coordinates and figures; a figure named as an axis is
        written ``result.NAME``) and the table of :mod:`aevb.sweeps.table`; returns its rows."""
        points = [(r["coordinates"], r["figures"].get(self.metric)) for r in results]
        rows = table.summarize(points, self.by, self.seed, self.reference)
        table.write_csv(self.out / "runs.csv", [
            r["coordinates"] | {(f"result.{k}" if k in r["coordinates"] else k): v
                                for k, v in r["figures"].items()} for r in results])
        table.write(rows, self.out, self.by, self.metric, self.reference,
                    self.description(results))
        return rows


def _grows(old: str, new: str) -> bool:
    try:
        return int(new) >= int(old)
    except ValueError:
        return False


def execute(tasks: list, executor: Executor, progress: bool = True,
            on_result: Callable[[object, dict], None] | None = None) -> list[dict]:
    """Every task's result, in the tasks' order, with a bar counting finished runs;
    ``on_result(task, result)`` is called as each finishes (a table rewritten after every run)."""
    results: dict[str, dict] = {}
    with tqdm(total=len(tasks), disable=not progress, unit="run",
              desc=f"runs ({type(executor).__name__.lower()})") as bar:
        for task, result in executor.map(tasks):
            results[task.key] = result
            if on_result is not None:
                on_result(task, result)
            bar.set_postfix(done=task.key)
            bar.update(1)
    return [results[t.key] for t in tasks]
