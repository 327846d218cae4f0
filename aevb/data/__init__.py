"""Data for aevb: the papers' datasets, a user's arrays and image folders, as device tensors.

=================  ===============================================================
``mnist``          MNIST (IDX files; :mod:`aevb.data.idx`), dynamically binarized
``fashion-mnist``  Fashion-MNIST (IDX files), dynamically binarized
``frey-face``      Frey Face, 28x20 grayscale (:mod:`aevb.data.frey`)
``array``          a ``.npy`` / ``.npz`` / ``.pt`` file (:mod:`aevb.data.arrays`)
``images``         a folder of images, class subfolders as labels (:mod:`aevb.data.images`)
=================  ===============================================================

:func:`load_data` reads a source, cuts the validation split from the training data where the
source has none (``data.validation_size``: a count, a fraction below 1, or 0 for none), keeps the first
``train_size`` / ``test_size`` images where those are set, binarizes as configured and moves
the splits to the device.
"""

from __future__ import annotations

import torch

from aevb.config import BINARIZATIONS
from aevb.inference.batching import DataBundle, Split
from aevb.inference.errors import DataError

from . import arrays, frey, idx, images  # noqa: F401  (register the sources)
from .arrays import InMemory, from_object
from .idx import cache_dir
from .sources import DATASETS, DataSource, Part, RawData

__all__ = ["BINARIZATIONS", "DATASETS", "DataBundle", "DataSource", "InMemory", "Part",
           "RawData", "Split", "cache_dir", "evaluation_part", "from_object", "load_data", "scored",
           "resolve_defaults"]


def resolve_defaults(cfg, source: DataSource | None = None):
    """``cfg`` with the source's defaults filled in where the user set nothing (binarization,
    validation size), so that the record says what ran."""
    from dataclasses import replace

    source = source or DATASETS.get(cfg.name)
    return replace(cfg,
                   binarization=cfg.binarization or source.default_binarization,
                   validation_size=(source.default_validation if cfg.validation_size is None
                                    else cfg.validation_size))


def _validation_count(size, n: int) -> int:
    count = int(round(size * n)) if size < 1 else int(size)
    if size == 0:
        return 0
    if count < 1 or count >= n:
        raise DataError(f"data.validation_size={size} leaves {n - count} of {n} training "
                        f"observations for training and {count} for validation; give a count "
                        f"below {n} or a fraction in (0, 1)")
    return count


def _binarize_once(x: torch.Tensor, seed: int) -> torch.Tensor:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.bernoulli(x, generator=gen)


def evaluation_part(raw: RawData, cfg, device: torch.device | str = "cpu") -> Split:
    """Observations handed to an evaluation (all of ``raw``'s splits together), prepared as
    the run's test images are: binarized once (from ``binarization_seed + 2``) unless the
    run's binarization is ``none``."""
    parts = [p for p in (raw.train, raw.valid, raw.test) if p is not None]
    x = torch.cat([p.x for p in parts])
    y = torch.cat([p.y for p in parts]) if all(p.y is not None for p in parts) else None
    if cfg.binarization not in (None, "none"):
        if x.min() < 0 or x.max() > 1:
            raise DataError(f"{raw.source}: values outside [0, 1] cannot be binarized as the "
                            f"run's data was; scale them to [0, 1]")
        x = _binarize_once(x, cfg.binarization_seed + 2)
    return Split(x.to(device), None if y is None else y.to(device))


def scored(split: Split, size: int | None = None, seed: int = 0) -> Split:
    """The first ``size`` images of ``split`` as an evaluation scores them: a split that draws
    fresh pixels every batch (dynamic binarization) binarized once, from ``seed``."""
    x = split.x[:size] if size is not None else split.x
    y = None if split.y is None else split.y[: len(x)]
    return Split(_binarize_once(x, seed) if split.dynamic else x, y)


def load_data(cfg, device: torch.device | str = "cpu", source: DataSource | None = None
              ) -> DataBundle:
    """Read ``source`` (default: the one ``cfg.name`` registers), split, binarize and move to
    ``device`` as ``cfg`` (a :class:`~aevb.config.DataConfig`) says."""
    source = source or DATASETS.get(cfg.name)
    cfg = resolve_defaults(cfg, source)
    raw = source.load(cfg)
    train, valid, test = raw.train, raw.valid, raw.test
    if valid is None:
        count = _validation_count(cfg.validation_size, len(train))
        if count:
            n_train = len(train) - count
            valid, train = train.take(slice(n_train, None)), train.take(slice(0, n_train))
    shapes = {tuple(p.x.shape[1:]) for p in (train, valid, test) if p is not None}
    if len(shapes) > 1:
        raise DataError(f"{raw.source}: the splits' observations differ in shape "
                        f"({', '.join(map(str, sorted(shapes)))})")
    if cfg.train_size is not None:
        train = train.take(slice(0, cfg.train_size))
    if cfg.test_size is not None:
        valid = valid.take(slice(0, cfg.test_size)) if valid is not None else None
        test = test.take(slice(0, cfg.test_size)) if test is not None else None
    parts = {"train": train, "valid": valid, "test": test}
    if cfg.binarization != "none":
        for name, p in parts.items():
            if p is not None and (p.x.min() < 0 or p.x.max() > 1):
                raise DataError(f"{raw.source} [{name}]: values in [{float(p.x.min()):g}, "
                                f"{float(p.x.max()):g}] cannot be binarized; scale them to "
                                f"[0, 1] or set data.binarization=none")
    seeds = {"train": cfg.binarization_seed, "valid": cfg.binarization_seed + 1,
             "test": cfg.binarization_seed + 2}
    splits: dict[str, Split | None] = {}
    for name, p in parts.items():
        if p is None:
            splits[name] = None
            continue
        x = p.x
        if cfg.binarization == "static" or (cfg.binarization == "dynamic" and name != "train"):
            x = _binarize_once(x, seeds[name])
        dynamic = cfg.binarization == "dynamic" and name == "train"
        splits[name] = Split(x.to(device), None if p.y is None else p.y.to(device), dynamic)
    description = {
        "dataset": cfg.name, "binarization": cfg.binarization,
        "x_shape": list(train.x.shape[1:]),
        "num_train": len(train), "num_valid": len(valid) if valid is not None else 0,
        "num_test": len(test) if test is not None else 0,
        "labels": train.y is not None,
        "subset": cfg.train_size is not None or cfg.test_size is not None,
    }
    return DataBundle(splits["train"], splits["valid"], splits["test"], raw.source, description)
