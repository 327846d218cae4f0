"""How a new run's parameters start (``train.init``), by name.

- ``torch``: each layer's own ``reset_parameters`` (what building the model did already).
- ``glorot``: the initialization of Burda et al.'s (2016) released code (``yburda/iwae``):
  every weight of a linear or convolutional layer drawn from Glorot & Bengio's (2010, eq. 16)
  uniform distribution U(−a, a), a = √(6 / (fan_in + fan_out)), every bias zero, and then the
  output bias of each Bernoulli observation of the pixels set to the logit of the training
  images' mean, clipped to [0.001, 0.999]. The decoder then starts at the data's mean image
  instead of at grey.

A model names the layers that give its Bernoulli pixels' logits with ``logit_layers()`` (see
:meth:`aevb.models.base.LatentVariableModel.logit_layers`); a model without one gets the
Glorot weights alone. Only a new run is initialized; a resumed run loads its checkpoint.

Beside the registry, :func:`normal` is the initialization of Kingma et al.'s (2014) released
code (``init_w(1e-3)`` in ``dpkingma/nips14-ssl``), which takes a standard deviation; the
semi-supervised runner's ``--init-sd`` names it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from aevb.inference.errors import ConfigError
from aevb.models.registry import Registry

#: an initialization: ``init(model, train_x)`` with the training images ``train_x``
INITIALIZATIONS: Registry[Callable[[nn.Module, torch.Tensor], None]] = Registry("initialization")

#: the clip of the pixel mean before its logit (Burda et al.'s code)
MEAN_CLIP = (0.001, 0.999)
WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)


@INITIALIZATIONS.register("torch")
def torch_default(model: nn.Module, train_x: torch.Tensor) -> None:
    """Leave torch's initialization as the model was built with it."""


@INITIALIZATIONS.register("glorot")
def glorot(model: nn.Module, train_x: torch.Tensor) -> None:
    """Glorot-uniform weights, zero biases, pixel logits' biases at the data's mean (module
    docstring)."""
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, WEIGHTED):
                nn.init.xavier_uniform_(layer.weight)
                if layer.bias is not None:
                    layer.bias.zero_()
        layers = getattr(model, "logit_layers", dict)()
        if layers:
            mean = train_x.float().mean(0).flatten().clamp(*MEAN_CLIP)
            for site, layer in layers.items():
                if layer.bias is None or layer.bias.shape != mean.shape:
                    raise ConfigError(f"train.init=glorot: the logit layer of {site!r} has "
                                      f"{layer.out_features} outputs, the images "
                                      f"{mean.numel()} pixels; use train.init=torch")
                layer.bias.copy_(torch.logit(mean).to(layer.bias))


def normal(module: nn.Module, sd: float | None) -> None:
    """Kingma et al.'s code's initialization: every parameter, weights and biases, drawn from
    N(0, ``sd``²); ``None`` keeps torch's."""
    if sd is None:
        return
    if sd <= 0:
        raise ConfigError(f"--init-sd {sd}: give a standard deviation > 0")
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, sd)
