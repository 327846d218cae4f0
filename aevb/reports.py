"""Reports a user reads: tables (Markdown and CSV) and their pictures, written atomically."""

from __future__ import annotations

import csv
from dataclasses import asdict
from pathlib import Path

from aevb.inference.evaluation.diagnostics import GradientStats
from aevb.inference.training.checkpoint import atomic_write_text

from .pictures import gradient_bars


def write_gradient_report(rows: list[GradientStats], out: Path, description: str) -> None:
    """``gradients.md``, ``gradients.csv`` and ``gradients.png`` in ``out``
    (``aevb diagnose gradients``)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "gradients.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    lines = [description, "", "| estimator | group | parameters | mean variance | median SNR | "
             "‖mean gradient‖ |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.estimator} | {r.group} | {r.parameters} | {r.variance:.3e} | {r.snr:.3f} | "
              f"{r.grad_norm:.3e} |" for r in rows]
    atomic_write_text(out / "gradients.md", "\n".join(lines) + "\n")
    gradient_bars(rows, out / "gradients.png")
