"""What every data source produces, and the registry of sources.

A source turns a :class:`~aevb.config.DataConfig` into :class:`RawData` (tensors on the CPU,
floats in [0, 1] or the source's own range, labels or none); :func:`aevb.data.load_data`
then splits, binarizes and moves it to the device. Register a new source with
``@DATASETS.register("name")`` on a subclass of :class:`DataSource`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from aevb.inference.errors import DataError
from aevb.models.registry import Registry


@dataclass
class Part:
    """One split of raw data: ``x`` ``(n, *x_shape)`` float32, ``y`` ``(n,)`` int64 or ``None``."""

    x: torch.Tensor
    y: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.x.shape[0]

    def take(self, index) -> Part:
        return Part(self.x[index], None if self.y is None else self.y[index])


@dataclass
class RawData:
    """A source's data before splitting: ``valid`` and ``test`` are ``None`` when the source has
    no such split (the validation split is then cut from ``train``)."""

    train: Part
    valid: Part | None
    test: Part | None
    source: str


class DataSource:
    """A kind of data aevb can read.

    :cvar default_binarization: used when ``data.binarization`` is not set.
    :cvar default_validation: ``data.validation_size`` when not set (a count or a fraction).
    """

    name = "?"
    default_binarization = "none"
    default_validation: float = 0.1

    def x_shape(self, cfg) -> tuple[int, ...] | None:
        """The shape of one observation if it is known without reading the data, else ``None``."""
        return None

    def load(self, cfg) -> RawData:  # pragma: no cover - abstract
        raise NotImplementedError


DATASETS: Registry[DataSource] = Registry("dataset")


def as_images(x: torch.Tensor, what: str) -> torch.Tensor:
    """``x`` as float32 observations ``(n, ...)``: uint8 becomes ``x / 255``; ``(n, H, W)``
    gains a channel axis; ``(n, H, W, C)`` with C in {1, 3, 4} is made channels-first. A clear
    :class:`DataError` names ``what`` for empty, non-numeric, integer or non-finite data."""
    if not isinstance(x, torch.Tensor):
        raise DataError(f"{what}: expected an array of observations, got {type(x).__name__}")
    if x.dim() < 2 or x.shape[0] == 0:
        raise DataError(f"{what}: expected (n, ...) observations with n > 0, got shape "
                        f"{tuple(x.shape)}")
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    elif x.dtype == torch.bool or x.is_floating_point():
        x = x.float()
    else:
        raise DataError(f"{what}: dtype {x.dtype} is not supported; give float32/float64 "
                        f"values (in [0, 1] for a Bernoulli likelihood) or uint8 pixels")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise DataError(f"{what}: {bad} values are NaN or infinite; clean the data first")
    if x.dim() == 3:
        x = x.unsqueeze(1)
    elif x.dim() == 4 and x.shape[1] not in (1, 3, 4) and x.shape[-1] in (1, 3, 4):
        x = x.permute(0, 3, 1, 2)
    return x.contiguous()


def as_labels(y, n: int, what: str) -> torch.Tensor | None:
    """Integer class labels ``(n,)`` or ``None``; mismatched or non-integer labels raise."""
    if y is None:
        return None
    y = torch.as_tensor(y)
    if y.dim() != 1 or y.shape[0] != n:
        raise DataError(f"{what}: {tuple(y.shape)} labels for {n} observations; give one "
                        f"integer label per observation")
    if y.is_floating_point():
        if not torch.equal(y, y.round()):
            raise DataError(f"{what}: labels must be integers (class indices)")
    elif y.dtype == torch.bool or y.is_complex():
        raise DataError(f"{what}: labels must be integers (class indices), got {y.dtype}")
    y = y.long()
    if (y < 0).any():
        raise DataError(f"{what}: labels must be class indices >= 0")
    return y
