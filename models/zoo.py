"""The model registry: ``@register_model("name")`` makes a model buildable from a config."""

from __future__ import annotations

from .registry import Registry

MODELS: Registry[type] = Registry("model", providers=(
    "aevb.models.vae", "aevb.models.deep", "aevb.models.linear_gaussian", "aevb.models.vqvae",
    "aevb.models.spec.compiler"))


def register_model(name: str):
    """Class decorator adding a :class:`~aevb.models.base.LatentVariableModel` to :data:`MODELS`."""
    return MODELS.register(name)
