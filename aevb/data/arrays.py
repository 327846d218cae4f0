"""A user's own data as arrays: in memory (a tensor, a numpy array, a torch ``Dataset``) or in a
file (``.npy``, ``.npz``, ``.pt``).

Observations are float in [0, 1] (or any range for a Gaussian likelihood) or uint8 pixels,
shaped ``(n, ...)``: ``(n, D)`` vectors, ``(n, H, W)`` grayscale images or ``(n, C, H, W)`` /
``(n, H, W, C)`` images. A file or a dict may hold named splits and labels:

===================  ==============================================================
``x`` / ``x_train``  training observations (a ``.npy`` file or a bare tensor is ``x``)
``y`` / ``y_train``  their labels (optional)
``x_valid``          a validation split (optional; else cut from the training data)
``x_test``           a test split (optional), with ``y_valid`` / ``y_test``
===================  ==============================================================
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from aevb.inference.errors import DataError

from .sources import DATASETS, DataSource, Part, RawData, as_images, as_labels

SUFFIXES = (".npy", ".npz", ".pt", ".pth")
KEYS = {"train": (("x", "x_train"), ("y", "y_train")), "valid": (("x_valid",), ("y_valid",)),
        "test": (("x_test",), ("y_test",))}


def _tensor(value, what: str):
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise DataError(f"{what}: an object array; give a numeric array")
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, torch.utils.data.Dataset):
        return value
    raise DataError(f"{what}: expected a tensor, a numpy array or a torch Dataset, got "
                    f"{type(value).__name__}")


def dataset_to_tensors(ds, what: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The items of a map-style ``Dataset``: each an observation, or ``(observation, label)``;
    PIL images are converted with torchvision's ``pil_to_tensor``."""
    from torchvision.transforms.functional import pil_to_tensor

    try:
        n = len(ds)
    except TypeError:
        raise DataError(f"{what}: a Dataset without len(); give a map-style Dataset") from None
    if n == 0:
        raise DataError(f"{what}: the Dataset is empty")
    xs, ys = [], []
    for i in range(n):
        item = ds[i]
        label = None
        if isinstance(item, tuple | list):
            item, label = item[0], (item[1] if len(item) > 1 else None)
        if not isinstance(item, torch.Tensor | np.ndarray):
            item = pil_to_tensor(item)
        xs.append(torch.as_tensor(item))
        ys.append(label)
    try:
        x = torch.stack(xs)
    except RuntimeError as exc:
        raise DataError(f"{what}: the Dataset's items differ in shape ({exc}); resize them "
                        f"to one size") from None
    y = None if any(v is None for v in ys) else torch.as_tensor([int(v) for v in ys])
    return x, y


def part(x, y, what: str) -> Part:
    """Images ``x`` (an array, a tensor or a torch ``Dataset``) and labels ``y`` as a checked
    :class:`Part`; ``what`` names them in errors."""
    x = _tensor(x, what)
    if isinstance(x, torch.utils.data.Dataset):
        x, found = dataset_to_tensors(x, what)
        y = found if y is None else y
    x = as_images(x, what)
    return Part(x, as_labels(_tensor(y, what + " labels"), len(x), what))


def _get(mapping, names):
    for n in names:
        if n in mapping:
            return mapping[n]
    return None


def from_mapping(mapping, what: str) -> RawData:
    """Splits from a dict-like of arrays named as in this module's docstring."""
    parts: dict[str, Part | None] = {}
    for split, (xs, ys) in KEYS.items():
        x = _get(mapping, xs)
        parts[split] = None if x is None else part(x, _get(mapping, ys), f"{what} [{xs[0]}]")
    if parts["train"] is None:
        raise DataError(f"{what}: no training data; name it 'x' (or 'x_train'); found keys "
                        f"{', '.join(map(str, mapping)) or '(none)'}")
    return RawData(parts["train"], parts["valid"], parts["test"], what)


def from_object(data, what: str = "in-memory data") -> RawData:
    """The API's ``data=``: a tensor / array / ``Dataset`` (training data), a dict of named
    arrays, an ``(x, y)`` pair of observations and labels, or a ``(train, valid, test)`` triple
    whose members are any of these (or ``None``)."""
    if isinstance(data, dict):
        return from_mapping(data, what)
    if isinstance(data, tuple | list):
        if len(data) == 3:
            splits = [None if d is None else _one(d, f"{what} [{name}]")
                      for d, name in zip(data, ("train", "valid", "test"), strict=True)]
            if splits[0] is None:
                raise DataError(f"{what}: the (train, valid, test) triple has no training data")
            return RawData(splits[0], splits[1], splits[2], what)
        if len(data) == 2:
            return RawData(_one(data, what), None, None, what)
        raise DataError(f"{what}: give training data, (x, y) or (train, valid, test), not a "
                        f"sequence of {len(data)}")
    return RawData(_one(data, what), None, None, what)


def _one(data, what: str) -> Part:
    if isinstance(data, tuple | list):
        if len(data) != 2:
            raise DataError(f"{what}: a split is an array or an (x, y) pair")
        return part(data[0], data[1], what)
    return part(data, None, what)


def read_file(path: Path) -> RawData:
    """Splits from a ``.npy`` / ``.npz`` / ``.pt`` file (``.pt`` read with ``weights_only``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist")
    if path.suffix not in SUFFIXES:
        raise DataError(f"data file {str(path)!r}: unknown kind; use .npy, .npz or .pt "
                        f"(or a folder of images)")
    what = str(path)
    try:
        if path.suffix == ".npy":
            content = np.load(path, allow_pickle=False)
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                content = {k: npz[k] for k in npz.files}
        else:
            content = torch.load(path, map_location="cpu", weights_only=True)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"data file {what} could not be read ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else 'corrupt'}); check or "
                        f"re-create it") from None
    if isinstance(content, dict):
        return from_mapping(content, what)
    return from_object(content, what)


class ArrayFile(DataSource):
    """``data.name=array data.path=FILE`` (``--data FILE``): a ``.npy``, ``.npz`` or ``.pt``."""

    name = "array"

    def load(self, cfg) -> RawData:
        if not cfg.path:
            raise DataError("data.name=array needs data.path=FILE (.npy, .npz or .pt)")
        return read_file(Path(cfg.path))


DATASETS.register("array")(ArrayFile())


class InMemory(DataSource):
    """The data handed to :func:`aevb.fit` (recorded as ``data.name: in-memory``)."""

    name = "in-memory"

    def __init__(self, raw: RawData | None):
        self.raw = raw

    def x_shape(self, cfg) -> tuple[int, ...] | None:
        return None if self.raw is None else tuple(self.raw.train.x.shape[1:])

    def load(self, cfg) -> RawData:
        if self.raw is None:
            raise DataError("this run was trained on in-memory data; pass the data again")
        return self.raw
