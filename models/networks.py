"""Networks that map the values of some variables to the parameters of one distribution.

Every network in aevb — the VAE's encoder and decoder as much as a spec's ``p(z1|z2)`` — has one
signature: it is built by a factory from :data:`NETWORKS` as
``factory(in_shapes, out_shape, hidden, activation, **options)`` and called as
``net(*inputs)``, where ``inputs[i]`` has shape ``(..., *in_shapes[i])`` (categorical values
arrive one-hot) and the result has shape ``(..., *out_shape)``. Leading dimensions (particles,
enumerated values, the batch) are arbitrary and broadcast against each other, so Pyro's
vectorized particles and parallel enumeration pass straight through.

Register your own with :func:`register_network`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import kernels
from .registry import Registry

Shape = tuple[int, ...]


class Tanh(nn.Tanh):
    r""":class:`torch.nn.Tanh` that, outside autograd (evaluation, sampling), computes
    :math:`\tanh x = 2\sigma(2x) - 1`: torch's CPU ``tanh`` kernel is the accurate, slow one
    (about 5x slower than ``sigmoid`` on a 2000 x 400 hidden layer), and the identity agrees with
    it to ~2e-7 (the tests check it). Training keeps ``torch.tanh`` and its one autograd node."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and input.requires_grad:
            return torch.tanh(input)
        return input.mul(2.0).sigmoid_().mul_(2.0).sub_(1.0)


class Softplus(nn.Softplus):
    r""":class:`torch.nn.Softplus` (β = 1) through :func:`~aevb.models.kernels.softplus`, which
    computes :math:`\log(1 + e^x)` on the CPU: torch's CPU kernel goes through ``log1p``, the
    slow one (softplus was 42% of an M1+M2 training step on 300-unit layers, and this is about
    2x faster forward and backward). The two agree to float32 rounding. Another β or threshold
    keeps torch's kernel."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if (self.beta, self.threshold) != (1.0, kernels.THRESHOLD):
            return super().forward(input)
        return kernels.softplus(input)


ACTIVATIONS: Registry[type[nn.Module]] = Registry("activation")
for _name, _cls in {
    "tanh": Tanh,
    "relu": nn.ReLU,
    "softplus": Softplus,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "sigmoid": nn.Sigmoid,
}.items():
    ACTIVATIONS.register(_name)(_cls)

#: factories ``(in_shapes, out_shape, hidden, activation, **options) -> nn.Module``
NETWORKS: Registry[Callable[..., nn.Module]] = Registry("network")


def register_network(name: str):
    """Decorator adding a network factory (or ``nn.Module`` class) to :data:`NETWORKS`.

    The factory is called as ``factory(in_shapes, out_shape, hidden, activation, **options)``
    (``options`` from the spec's ``networks.<name>.options``) and must return a module whose
    ``forward(*inputs)`` follows the shapes in this module's docstring.
    """
    return NETWORKS.register(name)


class ConcatLinear(nn.Linear):
    r"""A linear layer on concatenated inputs that never builds the concatenation.

    Called with one tensor it is :class:`torch.nn.Linear`. Called with a list of flat inputs
    ``[v_1, ..., v_n]`` (leading dimensions that broadcast against each other) it returns
    :math:`W [v_1; \dots; v_n] + b = \sum_i W_i v_i + b`, each :math:`W_i v_i` at its input's
    own leading shape, and broadcasts only the sum. Under parallel enumeration of y in M2
    (Kingma et al. 2014) q(z|x,y) gets x of shape ``(B, 784)`` and y of shape ``(C, 1, C)``:
    the 784-column product runs once per image instead of once per image and class.
    The parameters (``weight``, ``bias``) are nn.Linear's, so checkpoints are unchanged."""

    def __init__(self, in_sizes: Sequence[int], out_features: int):
        super().__init__(sum(in_sizes), out_features)
        self.in_sizes = [int(n) for n in in_sizes]

    def forward(self, input: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if isinstance(input, torch.Tensor):
            return super().forward(input)
        if len(input) == 1:
            return super().forward(input[0])
        weights = self.weight.split(self.in_sizes, dim=1)
        # the bias joins the first input's product, before any broadcasting
        out = F.linear(input[0], weights[0], self.bias)
        for v, w in zip(input[1:], weights[1:], strict=True):
            out = out + F.linear(v, w)
        return out


def mlp(sizes: Sequence[int], activation: str, in_sizes: Sequence[int] | None = None
        ) -> nn.Sequential:
    """Linear layers with ``activation`` between them (none after the last). The first layer
    is a :class:`ConcatLinear` over inputs of ``in_sizes`` (default: one input of
    ``sizes[0]``), so the network may be called with a list of flat inputs."""
    act = ACTIVATIONS.get(activation)
    in_sizes = [sizes[0]] if in_sizes is None else list(in_sizes)
    if sum(in_sizes) != sizes[0]:
        raise ValueError(f"input sizes {in_sizes} do not add up to the first layer's {sizes[0]}")
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(ConcatLinear(in_sizes, n_out) if i == 0 else nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def final_linear(network: nn.Module) -> nn.Linear | None:
    """The network's last layer with parameters, where it is linear (an MLP's output layer);
    ``None`` for a network that ends otherwise (a transposed convolution)."""
    last = None
    for layer in network.modules():
        if any(True for _ in layer.parameters(recurse=False)):
            last = layer
    return last if isinstance(last, nn.Linear) else None


def flat_inputs(inputs: Sequence[torch.Tensor], in_shapes: Sequence[Shape]) -> list[torch.Tensor]:
    """Each input with its trailing ``in_shape`` flattened to a vector; leading dimensions are
    left for :class:`ConcatLinear` to broadcast."""
    return [v.reshape(*v.shape[: v.dim() - len(s)], math.prod(s)) for v, s in
            zip(inputs, in_shapes, strict=True)]


def flatten_inputs(inputs: Sequence[torch.Tensor], in_shapes: Sequence[Shape]) -> torch.Tensor:
    """Flatten each input's trailing ``in_shape`` to a vector, broadcast the leading dimensions
    of all inputs against each other and concatenate the vectors (what :class:`ConcatLinear`
    computes on without building)."""
    flat = flat_inputs(inputs, in_shapes)
    if len(flat) == 1:
        return flat[0]
    lead = torch.broadcast_shapes(*(f.shape[:-1] for f in flat))
    return torch.cat([f.expand(*lead, f.shape[-1]) for f in flat], dim=-1)


@register_network("mlp")
class MLPNet(nn.Module):
    """Concatenated, flattened inputs -> ``hidden`` layers -> ``out_shape`` (Kingma & Welling 2014,
    appendix C: one hidden layer of tanh units)."""

    def __init__(self, in_shapes: Sequence[Shape], out_shape: Shape, hidden: Sequence[int] = (400,),
                 activation: str = "tanh"):
        super().__init__()
        self.in_shapes = [tuple(s) for s in in_shapes]
        self.out_shape = tuple(out_shape)
        in_sizes = [math.prod(s) for s in self.in_shapes]
        self.net = mlp([sum(in_sizes), *hidden, math.prod(self.out_shape)], activation, in_sizes)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.net(flat_inputs(inputs, self.in_shapes)).unflatten(-1, self.out_shape)


def _is_image(shape: Shape) -> bool:
    return len(shape) == 3


def _quarter(shape: Shape) -> tuple[int, int]:
    """The feature map after two stride-2 convolutions (k=4, p=1): floor(floor(n/2)/2)."""
    if min(shape[-2:]) < 4:
        raise ValueError(f"network type conv needs images of at least 4x4 pixels, got shape "
                         f"{tuple(shape)}; use type mlp")
    return (shape[-2] // 2 // 2, shape[-1] // 2 // 2)


@register_network("conv")
class ConvNet(nn.Module):
    """For images of any size and channel count ``(C, H, W)``. Image inputs pass two stride-2
    convolutions (28 -> 14 -> 7 for MNIST, 32 and 64 channels); their features are concatenated
    with the other inputs and pass ``hidden`` layers. An image output comes from a 64 x
    ceil(H/4) x ceil(W/4) layer and two stride-2 transposed convolutions (7 -> 14 -> 28),
    cropped to H x W where H or W is not a multiple of 4; any other output from a linear
    layer."""

    def __init__(self, in_shapes: Sequence[Shape], out_shape: Shape, hidden: Sequence[int] = (400,),
                 activation: str = "tanh"):
        super().__init__()
        act = ACTIVATIONS.get(activation)
        self.in_shapes = [tuple(s) for s in in_shapes]
        self.out_shape = tuple(out_shape)
        self.trunks = nn.ModuleDict()
        features = []
        for i, s in enumerate(self.in_shapes):
            if _is_image(s):
                h, w = _quarter(s)
                self.trunks[str(i)] = nn.Sequential(
                    nn.Conv2d(s[0], 32, 4, 2, 1), act(), nn.Conv2d(32, 64, 4, 2, 1), act(),
                    nn.Flatten())
                features.append((64 * h * w,))
            else:
                features.append(s)
        self.feature_shapes = features
        in_sizes = [math.prod(s) for s in features]
        n_in = sum(in_sizes)
        if _is_image(self.out_shape):
            _quarter(self.out_shape)
            self.seed_shape = (64, -(-self.out_shape[-2] // 4), -(-self.out_shape[-1] // 4))
            self.head = nn.Sequential(mlp([n_in, *hidden, math.prod(self.seed_shape)],
                                          activation, in_sizes), act())
            self.deconv: nn.Module | None = nn.Sequential(
                nn.ConvTranspose2d(64, 32, 4, 2, 1), act(),
                nn.ConvTranspose2d(32, self.out_shape[0], 4, 2, 1))
        else:
            self.head = mlp([n_in, *hidden, math.prod(self.out_shape)], activation, in_sizes)
            self.deconv = None

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        feats = []
        for i, (v, s) in enumerate(zip(inputs, self.in_shapes, strict=True)):
            if str(i) in self.trunks:
                lead = v.shape[: v.dim() - 3]
                v = self.trunks[str(i)](v.reshape(-1, *s)).reshape(*lead, -1)
            feats.append(v)
        h = self.head(flat_inputs(feats, self.feature_shapes))
        if self.deconv is None:
            return h.unflatten(-1, self.out_shape)
        lead = h.shape[:-1]
        out = self.deconv(h.reshape(-1, *self.seed_shape))
        height, width = self.out_shape[-2:]
        return out[..., :height, :width].reshape(*lead, *self.out_shape)


def build_network(kind: str, in_shapes: Sequence[Shape], out_shape: Shape,
                  hidden: Sequence[int], activation: str, **options) -> nn.Module:
    """The network registered as ``kind``, mapping ``in_shapes`` to ``out_shape``."""
    return NETWORKS.get(kind)([tuple(s) for s in in_shapes], tuple(out_shape), list(hidden),
                              activation, **options)
