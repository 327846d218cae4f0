"""MNIST and Fashion-MNIST from their IDX files, read with torchvision's readers.

Where the files come from, in order: ``data.data_dir`` (``--data-dir``), the environment
variable ``AEVB_DATA_DIR``, the system copy ``/usr/share/datasets/<name>`` (Debian's
``dataset-fashion-mnist`` package), and finally torchvision's download into
``~/.cache/aevb/data``. A folder may hold the four IDX files directly or in torchvision's layout
(``<Name>/raw/``), gzipped or not.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
import zlib
from pathlib import Path

import torch

from aevb.inference.errors import DataError

from .sources import DATASETS, DataSource, Part, RawData, as_images

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
SYSTEM_ROOT = Path("/usr/share/datasets")


def cache_dir() -> Path:
    """Where downloaded datasets are cached: ``$XDG_CACHE_HOME/aevb/data`` (default
    ``~/.cache/aevb/data``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "aevb" / "data"


def read_idx(path: Path, labels: bool) -> torch.Tensor:
    """An IDX file (gzipped or not) through torchvision's ``read_image_file`` /
    ``read_label_file``; a corrupt or truncated file raises a :class:`DataError` naming it."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    reader = read_label_file if labels else read_image_file
    path = Path(path)
    try:
        if path.suffix != ".gz":
            out = reader(str(path))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                plain = Path(tmp) / path.stem
                with gzip.open(path, "rb") as src, open(plain, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                out = reader(str(plain))
        expected = 1 if labels else 3
        if out.dim() != expected:
            raise ValueError(f"{out.dim()} dimensions, expected {expected}")
        return out
    except (OSError, EOFError, zlib.error, ValueError, RuntimeError, AssertionError,
            TypeError) as exc:
        raise DataError(f"{path} is not a readable IDX file ({type(exc).__name__}: "
                        f"{str(exc) or 'truncated'}); delete it and fetch it again") from None


class IdxDataset(DataSource):
    """A 28x28 grayscale dataset in LeCun et al.'s IDX format, with a test split."""

    default_binarization = "dynamic"
    default_validation = 10000

    def __init__(self, name: str, torchvision_class: str, apt_package: str | None = None):
        self.name, self.torchvision_class, self.apt_package = name, torchvision_class, apt_package

    def x_shape(self, cfg) -> tuple[int, ...]:
        return (1, 28, 28)

    def _find(self, folder: Path, stem: str) -> Path | None:
        for sub in (folder, folder / self.torchvision_class / "raw"):
            for name in (stem + ".gz", stem):
                if (sub / name).is_file():
                    return sub / name
        return None

    def candidate_dirs(self, data_dir: str | None) -> list[tuple[str, Path]]:
        out = []
        if data_dir:
            out.append(("data.data_dir / --data-dir", Path(data_dir)))
        if os.environ.get("AEVB_DATA_DIR"):
            out.append(("AEVB_DATA_DIR", Path(os.environ["AEVB_DATA_DIR"])))
        out.append(("system copy", SYSTEM_ROOT / self.name))
        out.append(("download cache", cache_dir()))
        return out

    def load_split(self, split: str, data_dir: str | None = None, download: bool = True
                   ) -> tuple[torch.Tensor, torch.Tensor, str]:
        """``(images uint8 [n, 1, 28, 28], labels int64 [n], source folder)`` of ``split``."""
        images_stem, labels_stem = FILES[split]
        if data_dir:  # asked for: that folder or an error, never a silent fallback
            folder = Path(data_dir).expanduser()
            if not folder.is_dir():
                raise DataError(f"--data-dir / data.data_dir {data_dir}: no such folder; give the "
                                f"folder that holds the {self.name} IDX files, or leave it out to "
                                f"use {SYSTEM_ROOT / self.name} or the download cache")
            if not (self._find(folder, images_stem) and self._find(folder, labels_stem)):
                raise DataError(f"--data-dir / data.data_dir {data_dir} holds no {self.name} "
                                f"{split} files ({images_stem}[.gz], {labels_stem}[.gz], directly "
                                f"or in {self.torchvision_class}/raw/); give the folder that "
                                f"holds them, or leave it out to use {SYSTEM_ROOT / self.name} "
                                f"or the download cache")
        looked = []
        for label, folder in self.candidate_dirs(data_dir):
            images, labels = self._find(folder, images_stem), self._find(folder, labels_stem)
            if images and labels:
                x = read_idx(images, labels=False).unsqueeze(1)
                y = read_idx(labels, labels=True).long()
                if len(x) != len(y):
                    raise DataError(f"{images} holds {len(x)} images but {labels} {len(y)} "
                                    f"labels; fetch both files again")
                return x, y, str(images.parent)
            looked.append(f"{folder} ({label})")
        if download:
            try:
                return self._download(split)
            except Exception as exc:  # no network, no torchvision
                reason = f"the torchvision download failed ({type(exc).__name__}: {exc})"
        else:
            reason = "data.download is false"
        hint = (f"install Debian's package (`apt-get install {self.apt_package}`), "
                if self.apt_package else "")
        raise DataError(
            f"{self.name} {split} files not found; looked in: {'; '.join(looked)}; and {reason}. "
            f"To fix: {hint}pass --data-dir / data.data_dir=PATH or set AEVB_DATA_DIR to a "
            f"folder with the IDX files ({images_stem}.gz, {labels_stem}.gz), or run once with "
            f"internet access so torchvision can download them into {cache_dir()}")

    def _download(self, split: str) -> tuple[torch.Tensor, torch.Tensor, str]:
        import torchvision

        cls = getattr(torchvision.datasets, self.torchvision_class)
        ds = cls(root=str(cache_dir()), train=(split == "train"), download=True)
        return ds.data.unsqueeze(1).clone(), ds.targets.clone().long(), str(cache_dir())

    def load(self, cfg) -> RawData:
        train_x, train_y, source = self.load_split("train", cfg.data_dir, cfg.download)
        test_x, test_y, _ = self.load_split("test", cfg.data_dir, cfg.download)
        return RawData(Part(as_images(train_x, source), train_y), None,
                       Part(as_images(test_x, source), test_y), source)


DATASETS.register("mnist")(IdxDataset("mnist", "MNIST"))
DATASETS.register("fashion-mnist")(
    IdxDataset("fashion-mnist", "FashionMNIST", "dataset-fashion-mnist"))
