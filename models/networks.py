"""Encoder and decoder networks (plain ``torch.nn``), chosen by name from :data:`NETWORKS`.

Encoders map ``x`` of shape ``(..., C, H, W)`` to a flat vector of ``out_features``; decoders map
``z`` of shape ``(..., z_dim)`` to ``(..., out_channels, H, W)``. Leading dimensions (particles,
batch) are arbitrary, so Pyro's vectorized particles pass straight through.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from .registry import Registry

ACTIVATIONS: Registry[type[nn.Module]] = Registry("activation")
for _name, _cls in {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "sigmoid": nn.Sigmoid,
}.items():
    ACTIVATIONS.register(_name)(_cls)


def mlp(sizes: Sequence[int], activation: str) -> nn.Sequential:
    """Linear layers with ``activation`` between them (none after the last)."""
    act = ACTIVATIONS.get(activation)
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """x -> hidden_sizes -> out_features (Kingma & Welling 2014, appendix C)."""

    def __init__(self, x_shape, out_features, hidden_sizes, activation):
        super().__init__()
        self.x_shape = tuple(x_shape)
        self.net = mlp([math.prod(self.x_shape), *hidden_sizes, out_features], activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(-len(self.x_shape)))


class MLPDecoder(nn.Module):
    """z -> reversed(hidden_sizes) -> out_channels x H x W."""

    def __init__(self, z_dim, x_shape, out_channels, hidden_sizes, activation):
        super().__init__()
        _, h, w = x_shape
        self.out_shape = (out_channels, h, w)
        sizes = [z_dim, *reversed(list(hidden_sizes)), math.prod(self.out_shape)]
        self.net = mlp(sizes, activation)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).unflatten(-1, self.out_shape)


def _check_28x28(x_shape) -> None:
    if tuple(x_shape[-2:]) != (28, 28):
        raise ValueError(f"network=conv is built for 28x28 images, got shape {tuple(x_shape)}; "
                         "use network=mlp for other sizes")


class ConvEncoder(nn.Module):
    """Two stride-2 convolutions (28 -> 14 -> 7), then an MLP head."""

    def __init__(self, x_shape, out_features, hidden_sizes, activation):
        super().__init__()
        _check_28x28(x_shape)
        act = ACTIVATIONS.get(activation)
        self.x_shape = tuple(x_shape)
        self.conv = nn.Sequential(
            nn.Conv2d(x_shape[0], 32, 4, 2, 1), act(), nn.Conv2d(32, 64, 4, 2, 1), act(),
            nn.Flatten(),
        )
        self.head = mlp([64 * 7 * 7, *hidden_sizes, out_features], activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[: -len(self.x_shape)]
        h = self.conv(x.reshape(-1, *self.x_shape))
        return self.head(h).reshape(*lead, -1)


class ConvDecoder(nn.Module):
    """An MLP to 64x7x7, then two stride-2 transposed convolutions (7 -> 14 -> 28)."""

    def __init__(self, z_dim, x_shape, out_channels, hidden_sizes, activation):
        super().__init__()
        _check_28x28(x_shape)
        act = ACTIVATIONS.get(activation)
        self.out_channels = out_channels
        self.fc = nn.Sequential(mlp([z_dim, *reversed(list(hidden_sizes)), 64 * 7 * 7], activation),
                                act())
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(64, 32, 4, 2, 1), act(), nn.ConvTranspose2d(32, out_channels, 4, 2, 1)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        h = self.fc(z.reshape(-1, z.shape[-1])).reshape(-1, 64, 7, 7)
        return self.deconv(h).reshape(*lead, self.out_channels, 28, 28)


class NetworkPair(NamedTuple):
    encoder: type[nn.Module]
    decoder: type[nn.Module]


NETWORKS: Registry[NetworkPair] = Registry("network")
NETWORKS.register("mlp")(NetworkPair(MLPEncoder, MLPDecoder))
NETWORKS.register("conv")(NetworkPair(ConvEncoder, ConvDecoder))
