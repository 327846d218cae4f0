"""A folder of images, read with torchvision's ``ImageFolder``: class subfolders give the labels
(a folder with no subfolders is read as unlabelled images). Grayscale or RGB, resized to
``data.image_size`` where it is set (else every image must have the first one's size)."""

from __future__ import annotations

from pathlib import Path

import torch

from aevb.inference.errors import DataError

from .sources import DATASETS, DataSource, Part, RawData, as_images


def _size(cfg) -> tuple[int, int] | None:
    size = cfg.image_size
    if size is None:
        return None
    size = [size] if isinstance(size, int) else list(size)
    return (size[0], size[0]) if len(size) == 1 else (size[0], size[1])


def _files(root: Path) -> list[Path]:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)


class ImageFolderData(DataSource):
    """``data.name=images data.path=DIR`` (``--data DIR``)."""

    name = "images"

    def _first(self, root: Path) -> Path:
        subdirs = sorted(p for p in root.iterdir() if p.is_dir())
        for folder in [root, *subdirs]:
            found = _files(folder)
            if found:
                return found[0]
        raise DataError(f"image folder {root} holds no images (.png, .jpg, ...) in it or in "
                        f"its class subfolders")

    def _mode(self, cfg, root: Path) -> tuple[str, tuple[int, int]]:
        from PIL import Image

        with Image.open(self._first(root)) as img:
            mode = img.mode
            size = (img.height, img.width)
        channels = cfg.channels or (1 if mode in ("1", "L", "LA", "I", "I;16", "F") else 3)
        if channels not in (1, 3):
            raise DataError(f"data.channels={channels}: image folders give 1 (grayscale) or "
                            f"3 (RGB) channels")
        return ("L" if channels == 1 else "RGB"), _size(cfg) or size

    def x_shape(self, cfg) -> tuple[int, ...] | None:
        root = Path(cfg.path or "")
        if not cfg.path or not root.is_dir():
            return None
        mode, (h, w) = self._mode(cfg, root)
        return (1 if mode == "L" else 3, h, w)

    def load(self, cfg) -> RawData:
        from PIL import Image, UnidentifiedImageError
        from torchvision.datasets import ImageFolder
        from torchvision.transforms import functional as TF

        if not cfg.path:
            raise DataError("data.name=images needs data.path=FOLDER")
        root = Path(cfg.path).expanduser()
        if not root.is_dir():
            raise DataError(f"image folder {str(root)!r} does not exist")
        mode, size = self._mode(cfg, root)
        resize = _size(cfg) is not None

        def read(path) -> torch.Tensor:
            try:
                with Image.open(path) as img:
                    img = img.convert(mode)
                    if resize:
                        img = TF.resize(img, list(size))
                    elif (img.height, img.width) != size:
                        raise DataError(f"{path} is {img.height}x{img.width}, the first image "
                                        f"{size[0]}x{size[1]}; set data.image_size=[H,W] to "
                                        f"resize them all")
                    return TF.pil_to_tensor(img)
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(f"{path} is not a readable image ({exc})") from None

        if any(p.is_dir() for p in root.iterdir()):
            folder = ImageFolder(str(root), loader=lambda p: p, allow_empty=True)
            items = folder.samples
            if not items:
                raise DataError(f"image folder {root}: its class subfolders hold no images")
            x = torch.stack([read(p) for p, _ in items])
            y: torch.Tensor | None = torch.tensor([c for _, c in items])
            classes = folder.classes
        else:
            x = torch.stack([read(p) for p in _files(root)])
            y, classes = None, []
        raw = RawData(Part(as_images(x, str(root)), y), None, None, str(root))
        raw.classes = classes  # type: ignore[attr-defined]
        return raw

DATASETS.register("images")(ImageFolderData())
