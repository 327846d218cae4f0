"""A sweep's grid: axes of config values and the cells they span.

The command line's grid syntax is Hydra's multirun syntax: ``KEY=V1,V2,...`` makes an axis of
``KEY`` (commas inside brackets or braces belong to one value: ``model.hidden_sizes=[200,
200],[400]`` has two), ``KEY=A:B`` (or ``KEY=range(A,B[,STEP])``) the integers A..B-1, and
``KEY=V`` with one value is a fixed override of every cell. A grid definition in Python may
name its values (:class:`Axis` with ``choices``): the zoo's ``row`` axis, whose value ``iwae5``
stands for ``elbo=iwae num_particles=5``.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

from aevb.inference.errors import ConfigError

_RANGE = re.compile(r"^(?:range\((-?\d+)\s*,\s*(-?\d+)\s*(?:,\s*(-?\d+)\s*)?\)|(-?\d+):(-?\d+))$")


@dataclass(frozen=True)
class Axis:
    """One dimension of the grid.

    :param name: the config key it sets (``elbo``, ``seed``) or, with ``choices``, a label.
    :param values: the values, as written on the command line (strings).
    :param choices: value -> the config overrides it stands for; ``None``: value ``v`` stands
        for ``name=v``.
    """

    name: str
    values: tuple[str, ...]
    choices: dict[str, tuple[str, ...]] | None = field(default=None, compare=False, hash=False)

    def overrides(self, value: str) -> list[str]:
        if self.choices is None:
            return [f"{self.name}={value}"]
        return list(self.choices[value])

    def extended(self, values: tuple[str, ...]) -> Axis:
        """This axis with ``values`` that it lacks appended."""
        return Axis(self.name, self.values + tuple(v for v in values if v not in self.values),
                    self.choices)


@dataclass(frozen=True)
class Cell:
    """One point of the grid: its coordinates (axis -> value) and its overrides."""

    coordinates: tuple[tuple[str, str], ...]
    overrides: tuple[str, ...]

    @property
    def coords(self) -> dict[str, str]:
        return dict(self.coordinates)

    @property
    def name(self) -> str:
        """The run folder's default name: ``elbo=iwae,num_particles=5,seed=0`` with the
        characters a folder name should not hold replaced."""
        text = ",".join(f"{k}={v}" for k, v in self.coordinates)
        return re.sub(r"[^A-Za-z0-9_.,=+-]", "_", text) or "run"


def split_values(text: str) -> list[str]:
    """``a,[1, 2],{x: 1, y: 2}`` -> ``['a', '[1, 2]', '{x: 1, y: 2}']``: commas at the top level
    separate values; a value may not be empty."""
    values, depth, current = [], 0, ""
    for char in text:
        if char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        if char == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += char
    values.append(current.strip())
    if depth != 0:
        raise ConfigError(f"{text!r}: unbalanced brackets; write lists as [a, b]")
    if any(v == "" for v in values):
        raise ConfigError(f"{text!r}: an empty value; separate values with single commas, "
                          "e.g. elbo=elbo,iwae")
    return values


def expand(value_text: str) -> list[str]:
    """The values of one ``KEY=...`` token's right-hand side (see the module's syntax)."""
    match = _RANGE.match(value_text.strip())
    if match:
        a, b, step, lo, hi = match.groups()
        start, stop, by = (int(lo), int(hi), 1) if lo is not None else (int(a), int(b),
                                                                         int(step or 1))
        if by == 0 or not range(start, stop, by):
            raise ConfigError(f"{value_text!r} is an empty range; A:B means A, A+1, ..., B-1 "
                              f"(e.g. seed=0:3)")
        return [str(v) for v in range(start, stop, by)]
    return split_values(value_text)


def parse(tokens: list[str]) -> tuple[list[str], list[Axis]]:
    """Command-line tokens -> (fixed overrides, axes): a token with several values is an axis,
    one with a single value a fixed override."""
    fixed: list[str] = []
    axes: list[Axis] = []
    for token in tokens:
        key, sep, value_text = token.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{token!r} is not KEY=VALUES; write e.g. elbo=elbo,iwae or "
                              f"seed=0:3")
        values = expand(value_text)
        if len(values) != len(set(values)):
            raise ConfigError(f"{token!r} repeats a value; give each value once")
        if any(a.name == key for a in axes) or any(f.partition("=")[0] == key for f in fixed):
            raise ConfigError(f"{key} is given twice; give all its values in one token, "
                              f"{key}=a,b")
        if len(values) == 1:
            fixed.append(f"{key}={values[0]}")
        else:
            axes.append(Axis(key, tuple(values)))
    return fixed, axes


def cells(axes: list[Axis]) -> list[Cell]:
    """Every combination of the axes' values, the first axis varying slowest."""
    out = []
    for combo in itertools.product(*(a.values for a in axes)):
        coordinates = tuple((a.name, v) for a, v in zip(axes, combo, strict=True))
        overrides = tuple(o for a, v in zip(axes, combo, strict=True) for o in a.overrides(v))
        out.append(Cell(coordinates, overrides))
    return out
