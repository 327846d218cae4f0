"""MLflow tracking of a run (``tracking.mlflow=URI``): its config as parameters, every epoch's
metrics row, the final figures, and the pictures and records of its folder as artifacts.

The run folder stays the record; MLflow holds a copy that many runs (a sweep's, several
machines') can be compared in. ``RUN/mlflow.json`` keeps the MLflow run's id, so a resumed run
goes on logging into the same MLflow run: parameters that the resume changed (``train.epochs``,
``optim.lr``) are tagged ``resumed.KEY = old -> new``, since MLflow keeps one value per
parameter. With a SQLite or file store the artifacts go beside it (``DIR/mlartifacts``), not
into the working directory.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from aevb.inference.errors import ConfigError

#: files of a run folder logged as artifacts at its end
ARTIFACTS = ("*.png", "evaluation.json", "config.yaml", "run.json", "metrics.csv")


def _artifact_root(uri: str) -> str | None:
    """Where a local store's artifacts go (``None``: the tracking server decides)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()
    if uri.startswith("file:") or "://" not in uri:
        path = Path(uri[len("file:"):] if uri.startswith("file:") else uri)
        return (path.resolve() / "mlartifacts").as_uri()
    return None


def _client(uri: str):
    """MLflow's client of the store at ``uri`` (a one-line error without MLflow)."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ConfigError("tracking.mlflow needs MLflow: pip install 'aevb[mlflow]'") from None
    return MlflowClient(tracking_uri=uri)


def prepare(uri: str, experiment: str, client=None) -> str:
    """The id of ``experiment`` in the store at ``uri``, created (and the store's schema with
    it) where missing. A sweep's driver calls it before its runs start, so that parallel runs
    do not race to create one SQLite store's tables."""
    client = client or _client(uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(experiment, artifact_location=_artifact_root(uri))


class MLflowTracker:
    """One MLflow run mirroring one aevb run folder (see the module)."""

    def __init__(self, client, run_id: str):
        self.client, self.run_id = client, run_id

    @classmethod
    def open(cls, cfg, run_dir: Path) -> MLflowTracker | None:
        """The tracker of ``cfg.tracking`` for ``run_dir`` (``None`` without ``tracking.mlflow``):
        the MLflow run that the folder's ``mlflow.json`` names where it still exists, else a new
        one in ``cfg.tracking.experiment``, tagged with ``cfg.tracking.tags``."""
        uri = cfg.tracking.mlflow
        if not uri:
            return None
        client = _client(uri)
        from mlflow.exceptions import MlflowException

        from aevb.config import to_dict
        from aevb.inference.training.checkpoint import atomic_write_text
        from aevb.resume import flatten

        record = run_dir / "mlflow.json"
        params = {k: str(v) for k, v in flatten(to_dict(cfg)).items() if k != "tracking.tags"}
        saved = json.loads(record.read_text()) if record.is_file() else {}
        run_id = None
        if saved.get("tracking_uri") == uri:
            try:
                run = client.get_run(saved["run_id"])
                run_id = run.info.run_id
            except MlflowException:
                run_id = None  # deleted from the store: a new MLflow run
        if run_id is not None:
            old = run.data.params
            for key, value in params.items():
                if key in old and old[key] != value:
                    client.set_tag(run_id, f"resumed.{key}", f"{old[key]} -> {value}")
            params = {k: v for k, v in params.items() if k not in old}
            client.update_run(run_id, status="RUNNING")
        else:
            name = cfg.tracking.experiment
            experiment_id = prepare(uri, name, client)
            tags = dict(cfg.tracking.tags) | {"aevb.run_dir": str(Path(run_dir).resolve())}
            run_id = client.create_run(experiment_id, run_name=Path(run_dir).name,
                                       tags=tags).info.run_id
            atomic_write_text(record, json.dumps({"tracking_uri": uri, "run_id": run_id,
                                                  "experiment": name}, indent=2) + "\n")
        tracker = cls(client, run_id)
        tracker.log_params(params)
        return tracker

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 parameters a call
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, values: dict, step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in values.items()
                   if isinstance(v, int | float) and not isinstance(v, bool) and k != "epoch"]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def log_row(self, row: dict) -> None:
        """One epoch's metrics row, at step = its epoch (a sink of the metrics log)."""
        self.log_metrics(row, step=int(row["epoch"]))

    def log_evaluation(self, result: dict) -> None:
        """The final figures, as ``final/NAME`` (log p(x), ELBO, active units, ...)."""
        self.log_metrics({f"final/{k}": v for k, v in result.items()})

    def log_folder(self, run_dir: Path) -> None:
        for pattern in ARTIFACTS:
            for path in sorted(Path(run_dir).glob(pattern)):
                self.client.log_artifact(self.run_id, str(path))

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


@contextlib.contextmanager
def tracked(cfg, run_dir: Path, active: bool = True):
    """The run's :class:`MLflowTracker` (``None`` when not tracked or not ``active``, a rank
    other than 0) for the block's duration: at its end the folder's pictures and records are
    logged and the MLflow run is marked finished, or failed (killed, for Ctrl-C) when the block
    raises."""
    tracker = MLflowTracker.open(cfg, Path(run_dir)) if active else None
    try:
        yield tracker
    except BaseException as exc:
        if tracker is not None:
            tracker.finish("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    if tracker is not None:
        tracker.log_folder(Path(run_dir))
        tracker.finish()
