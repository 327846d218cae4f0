"""Per-epoch metrics as JSON lines and CSV (and TensorBoard scalars when it is installed)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from aevb.inference.training.checkpoint import atomic_write_text


def finite(value):
    """``value`` with every non-finite float replaced by ``None``: JSON has no NaN or infinity,
    and ``json.dumps`` would otherwise write ``NaN``/``-Infinity``, which JSON readers refuse."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def dumps(value, **options) -> str:
    """Strict JSON of ``value`` (non-finite floats written as ``null``)."""
    return json.dumps(finite(value), allow_nan=False, **options)


class MetricsLog:
    """``metrics.jsonl`` is the record; ``metrics.csv`` is rewritten from it after each row.
    ``sinks``: further receivers of every appended row (``sink.log_row(row)``; an MLflow run,
    :mod:`aevb.tracking`)."""

    def __init__(self, run_dir: Path, tensorboard: bool = True, sinks: tuple = ()):
        self.sinks = tuple(sinks)
        self.jsonl = Path(run_dir) / "metrics.jsonl"
        self.csv = Path(run_dir) / "metrics.csv"
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                pass
            else:
                self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def rows(self) -> list[dict]:
        if not self.jsonl.is_file():
            return []
        return [json.loads(line) for line in self.jsonl.read_text().splitlines() if line.strip()]

    def truncate(self, last_epoch: int) -> None:
        """Drop rows after ``last_epoch`` (written after the checkpoint a resume starts from)."""
        rows = [r for r in self.rows() if r["epoch"] <= last_epoch]
        self._write(rows)

    def append(self, row: dict) -> None:
        self._write([*self.rows(), row])
        for sink in self.sinks:
            sink.log_row(row)
        if self.writer is not None:
            for key, value in row.items():
                if isinstance(value, int | float) and key != "epoch":
                    self.writer.add_scalar(key, value, row["epoch"])
            self.writer.flush()

    def _write(self, rows: list[dict]) -> None:
        atomic_write_text(self.jsonl, "".join(dumps(r) + "\n" for r in rows))
        fields: list[str] = []
        for r in rows:
            fields += [k for k in r if k not in fields]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fields)
        w.writeheader()
        w.writerows(finite(rows))
        atomic_write_text(self.csv, buf.getvalue())
