"""Sweeps: one engine for every grid of runs (:mod:`~aevb.sweeps.engine`), the grid syntax
(:mod:`~aevb.sweeps.grid`), where the runs execute (:mod:`~aevb.sweeps.executors`: in
process, local processes, a Ray cluster) and the table over seeds (:mod:`~aevb.sweeps.table`).

::

    import aevb
    rows = aevb.sweep("vae_fashion", ["elbo=elbo,iwae", "num_particles=1,5", "seed=0:3"],
                      metric="log_likelihood", out="results/estimators", executor="ray",
                      address="auto")

The command line's ``aevb sweep`` calls :func:`sweep`; the zoo benchmark and ``aevb experiment
semisupervised`` are grid definitions on the same engine.
"""

from __future__ import annotations

from pathlib import Path

from .engine import FIGURES, Sweep, TrainTask, execute, metrics_rows, run_figures
from .executors import EXECUTORS, Local, Processes, Ray, build_executor
from .grid import Axis, Cell, parse

__all__ = ["EXECUTORS", "FIGURES", "Axis", "Cell", "Local", "Processes", "Ray", "Sweep",
           "TrainTask", "build_executor",
           "execute", "metrics_rows", "parse", "run_figures", "sweep"]


def _grid_tokens(grid) -> list[str]:
    if isinstance(grid, dict):
        return [f"{k}={','.join(map(str, v)) if isinstance(v, list | tuple | range) else v}"
                for k, v in grid.items()]
    return list(grid)


def sweep(config: str | None, grid, *, out: str | Path, metric: str = "log_likelihood",
          reference: dict | list[str] | None = None, executor: str = "local",
          progress: bool = True, mlflow: str | None = None, experiment: str | None = None,
          **executor_options) -> list[dict]:
    """Run (or resume, or extend) the sweep of ``config`` over ``grid`` into ``out`` and
    return its table's rows.

    :param grid: the command line's tokens (``["elbo=elbo,iwae", "seed=0:3"]``; a single value
        is a fixed override) or a dict of key -> values (``{"elbo": ["elbo", "iwae"],
        "seed": range(3)}``).
    :param reference: the row paired differences are to (``{"elbo": "elbo"}`` or
        ``["elbo=elbo"]``).
    :param executor: ``local``, ``processes`` (``workers=K``) or ``ray`` (``address=``,
        ``cpus=``, ``gpus=``, ``max_retries=``); see :mod:`aevb.sweeps.executors`.
    :param mlflow: an MLflow tracking URI every run logs to, under ``experiment`` (default: the
        folder's name).
    """
    fixed, axes = parse(_grid_tokens(grid))
    if isinstance(reference, list):
        reference = dict(t.split("=", 1) for t in reference)
    engine = Sweep(Path(out), axes, fixed, config, metric, reference=reference, mlflow=mlflow,
                   experiment=experiment)
    return engine.run(build_executor(executor, **executor_options), progress)
