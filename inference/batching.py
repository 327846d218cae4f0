"""Datasets as the trainer and the evaluation see them: tensors on the device, cut into
:class:`~aevb.models.base.Batch` es.

Where the tensors come from (MNIST files, a user's array, a folder of images) is the business of
:mod:`aevb.data`; inference only needs the :class:`Split` s it produces.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from aevb.models.base import Batch


@dataclass
class Split:
    """Observations as float32 on the device (binarized already where it is fixed), with labels.

    :param torch.Tensor x: ``(n, *x_shape)``.
    :param torch.Tensor y: ``(n,)`` int64 labels, or ``None`` for unlabelled data.
    :param bool dynamic: draw fresh Bernoulli pixels from ``x`` for every batch (dynamic
        binarization, Burda et al. 2016).
    :param torch.Tensor scale: ``x``'s shape, or ``None``: draw every batch from
        N(``x``, ``scale`` squared) instead of showing ``x`` itself, e.g. a fresh sample of an
        M1 code z1 ~ q(z1|x) for M2 to model (Kingma et al. 2014, section 3.2, M1+M2).
    """

    x: torch.Tensor
    y: torch.Tensor | None = None
    dynamic: bool = False
    scale: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.scale is not None and self.scale.shape != self.x.shape:
            raise ValueError(f"Split: scale has shape {tuple(self.scale.shape)} but x has "
                             f"{tuple(self.x.shape)}; give one scale per value of x")

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def x_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def batches(self, batch_size: int, shuffle: bool = False, scaled: bool = False
                ) -> Iterator[Batch]:
        """Minibatches; ``scaled`` attaches N and the indices for the N/M plate scaling.
        With dynamic binarization each batch draws fresh Bernoulli pixels, with a ``scale``
        fresh Gaussian values."""
        n = len(self)
        order = torch.randperm(n, device=self.x.device) if shuffle else None
        for start in range(0, n, batch_size):
            idx = (order[start:start + batch_size] if order is not None
                   else torch.arange(start, min(start + batch_size, n), device=self.x.device))
            x = self.x[idx]
            if self.dynamic:
                x = torch.bernoulli(x)
            if self.scale is not None:
                x = x + self.scale[idx] * torch.randn_like(x)
            y = self.y[idx] if self.y is not None else None
            yield Batch(x, y, idx if scaled else None, n if scaled else None)


@dataclass
class DataBundle:
    """The training and (optional) validation and test splits of one dataset.

    :param str source: where the data came from (a folder, a file, ``"in-memory array"``).
    :param dict description: what the record says about the data (dataset, binarization, sizes).
    """

    train: Split
    valid: Split | None
    test: Split | None
    source: str
    description: dict = field(default_factory=dict)
