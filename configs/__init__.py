"""The configs and model specs that ship with aevb, resolved by name.

``aevb train --config vae_fashion`` reads ``vae_fashion.yaml`` from this package (installed
with aevb), ``--spec dlgm2`` reads ``specs/dlgm2.yaml``; a path to a YAML file works as well.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def _folder(kind: str) -> Path:
    root = Path(str(resources.files(__name__)))
    return root / "specs" if kind == "spec" else root


def names(kind: str = "config") -> list[str]:
    """The shipped configs (``kind="config"``) or specs (``kind="spec"``), by name."""
    return sorted(p.stem for p in _folder(kind).glob("*.yaml"))


def resolve(name_or_path: str | Path, kind: str = "config") -> Path:
    """The path of a shipped config or spec called ``name_or_path`` (``vae_fashion``,
    ``vae_fashion.yaml``), or ``name_or_path`` itself when it is an existing file or names
    no shipped one (the caller then reports the missing file)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    shipped = _folder(kind) / (path.name if path.suffix == ".yaml" else path.name + ".yaml")
    if len(path.parts) == 1 and shipped.is_file():
        return shipped
    return path
