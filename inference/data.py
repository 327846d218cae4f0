"""MNIST and Fashion-MNIST as tensors on the training device.

Where the files come from, in order: ``data.data_dir`` (``--data-dir``), the environment
variable ``AEVB_DATA_DIR``, the system copy ``/usr/share/datasets/<name>`` (Debian's
``dataset-fashion-mnist`` package), and finally torchvision's download into
``~/.cache/aevb/data``. A folder may hold the four IDX files directly or in torchvision's layout
(``<Name>/raw/``), gzipped or not.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.base import Batch
from models.registry import Registry

from .config import DataConfig
from .errors import DataError


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    torchvision_class: str
    apt_package: str | None
    x_shape: tuple[int, int, int] = (1, 28, 28)


DATASETS: Registry[DatasetInfo] = Registry("dataset")
DATASETS.register("mnist")(DatasetInfo("mnist", "MNIST", None))
DATASETS.register("fashion-mnist")(DatasetInfo("fashion-mnist", "FashionMNIST", "dataset-fashion-mnist"))

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
SYSTEM_ROOT = Path("/usr/share/datasets")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "aevb" / "data"


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (LeCun et al.'s format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 8:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DataError(f"{path} is truncated: expected {int(np.prod(shape))} bytes of data, "
                        f"found {data.size}; delete it and fetch it again")
    return data.reshape(shape)


def _find(folder: Path, stem: str, info: DatasetInfo) -> Path | None:
    for sub in (folder, folder / info.torchvision_class / "raw"):
        for name in (stem + ".gz", stem):
            if (sub / name).is_file():
                return sub / name
    return None


def candidate_dirs(info: DatasetInfo, data_dir: str | None) -> list[tuple[str, Path]]:
    out = []
    if data_dir:
        out.append(("data.data_dir / --data-dir", Path(data_dir)))
    if os.environ.get("AEVB_DATA_DIR"):
        out.append(("AEVB_DATA_DIR", Path(os.environ["AEVB_DATA_DIR"])))
    out.append(("system copy", SYSTEM_ROOT / info.name))
    out.append(("download cache", cache_dir()))
    return out


def load_split(name: str, split: str, data_dir: str | None = None,
               download: bool = True) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``(images uint8 [n, 1, 28, 28], labels int64 [n], source folder)`` of ``split``."""
    info = DATASETS.get(name)
    images_stem, labels_stem = FILES[split]
    looked = []
    for label, folder in candidate_dirs(info, data_dir):
        images, labels = _find(folder, images_stem, info), _find(folder, labels_stem, info)
        if images and labels:
            x = torch.from_numpy(read_idx(images).copy()).unsqueeze(1)
            y = torch.from_numpy(read_idx(labels).astype(np.int64))
            return x, y, str(images.parent)
        looked.append(f"{folder} ({label})")
    if download:
        try:
            return _download(info, split)
        except Exception as exc:  # no network, no torchvision
            reason = f"the torchvision download failed ({type(exc).__name__}: {exc})"
    else:
        reason = "data.download is false"
    hint = (f"install Debian's package (`apt-get install {info.apt_package}`), "
            if info.apt_package else "")
    raise DataError(
        f"{name} {split} files not found; looked in: {'; '.join(looked)}; and {reason}. "
        f"To fix: {hint}pass --data-dir / data.data_dir=PATH or set AEVB_DATA_DIR to a folder "
        f"with the IDX files ({images_stem}.gz, {labels_stem}.gz), or run once with internet "
        f"access so torchvision can download them into {cache_dir()}")


def _download(info: DatasetInfo, split: str) -> tuple[torch.Tensor, torch.Tensor, str]:
    import torchvision

    cls = getattr(torchvision.datasets, info.torchvision_class)
    ds = cls(root=str(cache_dir()), train=(split == "train"), download=True)
    return ds.data.unsqueeze(1).clone(), ds.targets.clone().long(), str(cache_dir())


@dataclass
class Split:
    """Images as float32 in [0, 1] on the device (binarized already where it is fixed)."""

    x: torch.Tensor
    y: torch.Tensor
    dynamic: bool = False

    def __len__(self) -> int:
        return self.x.shape[0]

    def batches(self, batch_size: int, shuffle: bool = False, scaled: bool = False
                ) -> Iterator[Batch]:
        """Minibatches; ``scaled`` attaches N and the indices for the N/M plate scaling.
        With dynamic binarization each batch draws fresh Bernoulli pixels."""
        n = len(self)
        order = torch.randperm(n, device=self.x.device) if shuffle else None
        for start in range(0, n, batch_size):
            idx = (order[start:start + batch_size] if order is not None
                   else torch.arange(start, min(start + batch_size, n), device=self.x.device))
            x = self.x[idx]
            if self.dynamic:
                x = torch.bernoulli(x)
            yield Batch(x, self.y[idx], idx if scaled else None, n if scaled else None)


@dataclass
class DataBundle:
    train: Split
    valid: Split
    test: Split
    source: str
    description: dict


def _binarize_once(x: torch.Tensor, seed: int) -> torch.Tensor:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.bernoulli(x, generator=gen)


def load_data(cfg: DataConfig, device: torch.device | str = "cpu") -> DataBundle:
    """Load, split, binarize and move to ``device`` as configured."""
    train_x, train_y, source = load_split(cfg.name, "train", cfg.data_dir, cfg.download)
    test_x, test_y, _ = load_split(cfg.name, "test", cfg.data_dir, cfg.download)
    n_train = train_x.shape[0] - cfg.validation_size
    if n_train <= 0:
        raise DataError(f"data.validation_size={cfg.validation_size} leaves no training images "
                        f"out of {train_x.shape[0]}")
    valid_x, valid_y = train_x[n_train:], train_y[n_train:]
    train_x, train_y = train_x[:n_train], train_y[:n_train]
    if cfg.train_size is not None:
        train_x, train_y = train_x[:cfg.train_size], train_y[:cfg.train_size]
    if cfg.test_size is not None:
        test_x, test_y = test_x[:cfg.test_size], test_y[:cfg.test_size]
        valid_x, valid_y = valid_x[:cfg.test_size], valid_y[:cfg.test_size]
    tensors = {"train": train_x, "valid": valid_x, "test": test_x}
    floats = {k: v.float().div_(255.0) for k, v in tensors.items()}
    seeds = {"train": cfg.binarization_seed, "valid": cfg.binarization_seed + 1,
             "test": cfg.binarization_seed + 2}
    if cfg.binarization == "static":
        floats = {k: _binarize_once(v, seeds[k]) for k, v in floats.items()}
    elif cfg.binarization == "dynamic":
        floats.update({k: _binarize_once(floats[k], seeds[k]) for k in ("valid", "test")})
    dynamic = cfg.binarization == "dynamic"
    labels = {"train": train_y, "valid": valid_y, "test": test_y}
    splits = {k: Split(floats[k].to(device), labels[k].to(device), dynamic and k == "train")
              for k in floats}
    description = {
        "dataset": cfg.name, "binarization": cfg.binarization,
        "num_train": len(splits["train"]), "num_valid": len(splits["valid"]),
        "num_test": len(splits["test"]),
        "subset": cfg.train_size is not None or cfg.test_size is not None,
    }
    return DataBundle(splits["train"], splits["valid"], splits["test"], source, description)
