"""Side-by-side timing shared by the benchmarks: alternate the trials in rounds."""

from __future__ import annotations

import statistics
from collections.abc import Callable


def alternate(trials: dict[str, Callable[[], float]], rounds: int, ratio: tuple[str, str]
              ) -> tuple[dict[str, list[float]], list[float]]:
    """Run each trial once to warm up, then ``rounds`` rounds of every trial, the order
    rotating from round to round so that all see the same machine state. Returns each trial's
    results (whatever a trial returns: ms/step, s/epoch) and, per round, the ratio of
    ``ratio[0]``'s result to ``ratio[1]``'s in that round."""
    names = list(trials)
    for name in names:
        trials[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    ratios = []
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(trials[name]())
        ratios.append(times[ratio[0]][-1] / times[ratio[1]][-1])
    return times, ratios


def table(times: dict[str, list[float]], ratios: list[float], columns: tuple[str, str],
          ratio_label: str) -> str:
    """The Markdown table of :func:`alternate`'s results, ``columns`` naming the trial and its
    unit (each row the median over rounds), and a last line with ``ratio_label`` and the median
    of the within-round ratios, then every round's ratio."""
    lines = [f"| {columns[0]} | {columns[1]} |", "|---|---|"]
    lines += [f"| {name} | {statistics.median(values):.1f} |" for name, values in times.items()]
    lines.append(f"{ratio_label} (median within-round ratio): {statistics.median(ratios):.2f}x "
                 f"(rounds: {', '.join(f'{v:.2f}' for v in ratios)})")
    return "\n".join(lines)
