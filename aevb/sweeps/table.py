"""A sweep's table: a metric's mean and 95% interval over seeds for every other coordinate, and
paired differences to a reference row over the seeds both share.

Runs that share a seed share what the seed fixes (the initialisation, the minibatch order, a
semi-supervised run's labelled subset), so the difference of two rows over their common seeds
cancels the seed-to-seed spread that both rows' own intervals keep: with a reference row, the
paired difference is the comparison to lead with.
"""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path


def t95(n: int) -> float:
    """The two-sided 95% quantile of Student's t with n - 1 degrees of freedom (scipy)."""
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1))


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% Student-t interval (nan for one value)."""
    mean = statistics.fmean(values)
    half = (t95(len(values)) * statistics.stdev(values) / math.sqrt(len(values))
            if len(values) > 1 else float("nan"))
    return mean, half


def summarize(points: list[tuple[dict, float | None]], by: list[str], seed: str = "seed",
              reference: dict | None = None) -> list[dict]:
    """One row per combination of the ``by`` coordinates among ``points`` ((coordinates,
    value) pairs; in order of first appearance): ``seeds``, ``mean`` and ``ci95`` of the values
    over the points' ``seed`` coordinate, and, where ``reference`` (coordinates, e.g.
    ``{"elbo": "elbo"}``) names another row of the same other coordinates, ``paired_diff`` and
    ``paired_ci95`` (row − reference over the seeds both have; nan where none is shared) and
    ``paired_seeds``. A point without a value (a run whose model has no such figure) is left
    out of its row's seeds."""
    groups: dict[tuple, dict] = {}
    for i, (coords, value) in enumerate(points):
        if value is None:
            continue
        key = tuple(coords.get(k) for k in by)
        groups.setdefault(key, {})[coords.get(seed, i)] = float(value)
    rows = []
    for key, by_seed in groups.items():
        coords = dict(zip(by, key, strict=True))
        mean, half = mean_ci(list(by_seed.values()))
        row = coords | {"seeds": len(by_seed), "mean": mean, "ci95": half,
                        "paired_diff": math.nan, "paired_ci95": math.nan, "paired_seeds": 0}
        if reference:
            ref_key = tuple(reference.get(k, coords[k]) for k in by)
            ref = groups.get(ref_key, {})
            shared = [s for s in by_seed if s in ref]
            if ref_key != key and shared:
                diff, diff_half = mean_ci([by_seed[s] - ref[s] for s in shared])
                row |= {"paired_diff": diff, "paired_ci95": diff_half,
                        "paired_seeds": len(shared)}
        rows.append(row)
    return rows


def _num(value: float, signed: bool = False) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:{'+' if signed else ''}.2f}"


def write_csv(path: Path, rows: list[dict]) -> None:
    """Rows as CSV, with the union of their keys as columns."""
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def markdown(rows: list[dict], by: list[str], metric: str, reference: dict | None,
             description: str) -> str:
    """The table of :func:`summarize`'s rows, under ``description``."""
    ref = ", ".join(f"{k}={v}" for k, v in (reference or {}).items())
    head = [*by, "seeds", f"{metric} (mean ± 95% CI)"]
    if reference:
        head.append(f"minus {ref}, paired over seeds (± 95% CI)")
    lines = [description, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r[k]) for k in by] + [str(r["seeds"]),
                                           f"{_num(r['mean'])} ± {_num(r['ci95'])}"]
        if reference:
            cells.append("" if not r["paired_seeds"] else
                         f"{_num(r['paired_diff'], signed=True)} ± {_num(r['paired_ci95'])} "
                         f"({r['paired_seeds']} seeds)")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], by: list[str], metric: str, path: Path) -> None:
    """The metric's mean ± 95% interval per row, one point per row (``path``, PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [", ".join(f"{k}={r[k]}" for k in by) or "all" for r in rows]
    means = [r["mean"] for r in rows]
    errors = [0.0 if math.isnan(r["ci95"]) else r["ci95"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(rows) + 2), 3.6))
    ax.errorbar(range(len(rows)), means, yerr=errors, fmt="o", capsize=4)
    ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"{metric} (mean ± 95% CI over seeds)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(rows: list[dict], out: Path, by: list[str], metric: str, reference: dict | None,
          description: str, stem: str = "results") -> str:
    """``out/STEM.md``, ``out/STEM.csv`` and ``out/STEM.png``; returns the Markdown."""
    from aevb.inference.training.checkpoint import atomic_write_text

    text = markdown(rows, by, metric, reference, description)
    atomic_write_text(out / f"{stem}.md", text)
    write_csv(out / f"{stem}.csv", rows)
    if rows:
        plot(rows, by, metric, out / f"{stem}.png")
    return text
