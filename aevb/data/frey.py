"""Frey Face, the second dataset of Kingma & Welling (2014): 1965 grayscale faces of 28x20
pixels, modelled with a Gaussian decoder (section 5). Read from ``frey_rawface.mat`` (its
array ``ff``, 560 x 1965 uint8, one image per column in row-major 28x20 order), found in
``data.path``, ``data.data_dir``, ``AEVB_DATA_DIR`` or the download cache, and downloaded
there with torchvision's ``download_url`` where there is internet."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from aevb.inference.errors import DataError

from .idx import cache_dir
from .sources import DATASETS, DataSource, Part, RawData, as_images

FILE = "frey_rawface.mat"
URL = "https://cs.nyu.edu/~roweis/data/frey_rawface.mat"
SHAPE = (28, 20)


def read_frey(path: Path) -> torch.Tensor:
    """``(n, 1, 28, 20)`` uint8 faces from a ``frey_rawface.mat``."""
    from scipy.io import loadmat

    try:
        ff = loadmat(str(path))["ff"]
    except KeyError:
        raise DataError(f"{path} has no array 'ff'; it is not frey_rawface.mat") from None
    except Exception as exc:
        raise DataError(f"{path} could not be read ({type(exc).__name__}: {exc}); delete it and "
                        f"fetch it again") from None
    if ff.ndim != 2 or ff.shape[0] != SHAPE[0] * SHAPE[1]:
        raise DataError(f"{path}: 'ff' has shape {ff.shape}, expected (560, n) faces of 28x20")
    return torch.from_numpy(ff.T.copy()).reshape(-1, 1, *SHAPE)


class FreyFace(DataSource):
    """The Frey Face dataset as a data source (see the module)."""
    name = "frey-face"
    default_validation = 0.1

    def x_shape(self, cfg) -> tuple[int, ...]:
        return (1, *SHAPE)

    def candidates(self, cfg) -> list[Path]:
        out = [Path(cfg.path).expanduser()] if cfg.path else []
        for folder in (cfg.data_dir, os.environ.get("AEVB_DATA_DIR")):
            if folder:
                out.append(Path(folder) / FILE)
        return [*out, cache_dir() / FILE]

    def load(self, cfg) -> RawData:
        for path in self.candidates(cfg):
            if path.is_file():
                x = read_frey(path)
                return RawData(Part(as_images(x, str(path))), None, None, str(path))
        looked = "; ".join(map(str, self.candidates(cfg)))
        if cfg.download:
            from torchvision.datasets.utils import download_url

            try:
                download_url(URL, str(cache_dir()), FILE)
                return self.load(cfg)
            except Exception as exc:
                reason = f"the download from {URL} failed ({type(exc).__name__}: {exc})"
        else:
            reason = "data.download is false"
        raise DataError(f"frey-face: {FILE} not found (looked in {looked}) and {reason}; pass "
                        f"data.path=PATH/{FILE} or run once with internet access")

DATASETS.register("frey-face")(FreyFace())
