"""Paths through latent space: decode the way from one input's code to another's.

The endpoints are the posterior means of q(z|x) of the two inputs (``encode``); the path is
linear, z(t) = (1 - t) z_a + t z_b, or spherical (slerp; Shoemake 1985, used for VAE latents by
White 2016, "Sampling generative networks"), which keeps the norm that a high-dimensional
standard-normal prior concentrates its mass at (about sqrt(d)), where the straight line's
midpoint falls short of it. Each point is decoded to the mean of p(x|z) (``decode``). A model
that reads labels keeps one class along the path: ``y_a`` (required for a CVAE; for M2 the
class q(y|x_a) finds most probable unless given).
"""

from __future__ import annotations

import torch

from aevb.models.base import labels_of


def lerp(z_a: torch.Tensor, z_b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``(len(t), *z.shape)``: the straight line from ``z_a`` (t = 0) to ``z_b`` (t = 1)."""
    t = t.reshape(-1, *([1] * z_a.dim()))
    return (1 - t) * z_a + t * z_b


def slerp(z_a: torch.Tensor, z_b: torch.Tensor, t: torch.Tensor, eps: float = 1e-7
          ) -> torch.Tensor:
    """``(len(t), *z.shape)``: the great-circle path between the directions of ``z_a`` and
    ``z_b``, its norm moving linearly between theirs:
    sin((1 - t) Omega) / sin(Omega) a + sin(t Omega) / sin(Omega) b, Omega the angle between
    them. Nearly parallel endpoints (sin(Omega) < ``eps``) fall back to :func:`lerp`."""
    a, b = z_a.flatten(), z_b.flatten()
    cos = torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(eps)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if torch.sin(omega) < eps:
        return lerp(z_a, z_b, t)
    t = t.reshape(-1, *([1] * z_a.dim()))
    return (torch.sin((1 - t) * omega) * z_a + torch.sin(t * omega) * z_b) / torch.sin(omega)


PATHS = {"linear": lerp, "slerp": slerp}


def can_interpolate(model) -> bool:
    """Whether the model has what interpolation needs: ``encode`` and ``decode``."""
    return hasattr(model, "encode") and hasattr(model, "decode")


@torch.no_grad()
def interpolate(model, x_a: torch.Tensor, x_b: torch.Tensor, steps: int = 10,
                path: str = "linear", y_a: torch.Tensor | None = None) -> torch.Tensor:
    """``(steps, *x_shape)``: the means of p(x|z) along ``path`` (``linear`` or ``slerp``)
    from the code of ``x_a`` to that of ``x_b`` (single inputs, without a batch dimension).
    ``y_a``: the label a model with required labels is conditioned on."""
    if not can_interpolate(model):
        raise ValueError(f"{type(model).__name__} has no encode(x) and decode(z); it cannot "
                         "interpolate (add both methods: see aevb.models.base)")
    if path not in PATHS:
        raise ValueError(f"path {path!r} is not one of {', '.join(PATHS)}")
    if steps < 2:
        raise ValueError(f"steps={steps}: a path needs at least 2 points (its two ends)")
    labels = labels_of(model)
    if labels == "required" and y_a is None:
        raise ValueError(f"{type(model).__name__} requires labels: pass y_a")
    model.eval()
    if labels == "optional" and y_a is None:  # M2: the class q(y|x_a) finds most probable
        y_a = model.label_logits(x_a[None]).argmax(-1)[0]
    y = y_a.reshape(1) if y_a is not None and labels != "unused" else None
    def encode(x):
        return model.encode(x[None])[0] if y is None else model.encode(x[None], y=y)[0]

    z_a, z_b = encode(x_a), encode(x_b)
    t = torch.linspace(0, 1, steps, device=z_a.device)
    z = PATHS[path](z_a, z_b, t)
    return model.decode(z) if y is None else model.decode(z, y=y.expand(steps))
