"""The names aevb's own registries hold, by the config key that takes them, without importing
them: a mistyped name on the command line (``elbo=iwea``) is answered before torch is imported.

Registries are filled by importing modules that import torch, so while torch is not imported
no other name can have been registered and this catalog is the whole list; once it is (a user's
``@register_model`` in Python), :func:`aevb.config.validate` checks the registries themselves.
``tests/test_config.py`` checks that the catalog equals the registries.
"""

from __future__ import annotations

import sys

#: config key -> (what it names, the shipped registry's names)
NAMES: dict[str, tuple[str, tuple[str, ...]]] = {
    "elbo": ("objective", ("aae", "elbo", "infovae", "iwae", "meanfield", "mmd", "renyi",
                           "rws", "score", "wake-sleep")),
    "info_divergence": ("divergence", ("adversarial", "mmd")),
    "optim.name": ("optimizer", ("adagrad", "adam")),
    "train.engine": ("engine", ("fast", "graphed", "svi")),
    "train.init": ("initialization", ("glorot", "torch")),
    "optim.schedule": ("schedule", ("burda", "constant")),
    "data.name": ("dataset", ("array", "fashion-mnist", "frey-face", "images", "mnist")),
    "model.network": ("network", ("conv", "mlp")),
    "model.activation": ("activation", ("elu", "leaky_relu", "relu", "sigmoid", "softplus",
                                        "tanh")),
    "model.likelihood": ("family", ("bernoulli", "categorical", "diag", "full", "gaussian",
                                    "iaf", "lowrank", "mixture", "planar")),
    "model.posterior": ("posterior", ("diag", "full", "iaf", "lowrank", "mixture", "planar")),
    "model.name": ("model", ("dlgm", "linear_gaussian", "sbn", "spec", "vae", "vqvae")),
}


#: objective-specific config keys -> the objectives (``elbo=``) each belongs to
OBJECTIVE_OPTIONS: dict[str, tuple[str, ...]] = {
    "renyi_alpha": ("renyi",), "mmd_scale": ("mmd",), "rws_insomnia": ("rws",),
    "info_alpha": ("infovae",), "info_lambda": ("infovae",), "info_divergence": ("infovae",),
    "critic_hidden": ("infovae", "aae")}


def authoritative() -> bool:
    """Whether the catalog is the whole list (nothing can have registered more yet)."""
    return "torch" not in sys.modules


def unknown(key: str, value: str | None) -> str | None:
    """The error for ``key=value`` where ``value`` is not a shipped name, else ``None``."""
    if value is None or key not in NAMES:
        return None
    kind, names = NAMES[key]
    if value in names:
        return None
    message = f"bad value for config key {key!r}: {value!r} is not one of {', '.join(names)}"
    if key == "model.name":
        message += "; or give a file: model=path/to/my_model.py:MyModel"
    return message
