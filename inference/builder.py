"""Build the configured model: any class keeping the contract of :mod:`models.base`.

The constructor receives ``x_shape`` (when it takes it), the ``model.*`` config keys it takes
(``z_dim``, ``hidden_sizes``, ``spec``, ...) and ``model.options``. A key the user set that the
constructor does not take is refused instead of silently dropped.
"""

from __future__ import annotations

import inspect
from dataclasses import fields

from models.base import LatentVariableModel, labels_of
from models.loading import ModelLoadError, resolve_model
from models.spec import SpecError

from .config import ModelConfig
from .errors import ConfigError

_NOT_ARGUMENTS = ("name", "options")


def build_model(cfg: ModelConfig, x_shape) -> LatentVariableModel:
    try:
        cls = resolve_model(cfg.name)
    except ModelLoadError as exc:
        raise ConfigError(f"bad value for config key 'model.name': {exc}") from None
    params = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs: dict = {}
    if "x_shape" in params or takes_any:
        kwargs["x_shape"] = tuple(x_shape)
    defaults = ModelConfig()
    for f in fields(ModelConfig):
        if f.name in _NOT_ARGUMENTS:
            continue
        value = getattr(cfg, f.name)
        if f.name in params or takes_any:
            if f.name != "spec" or value is not None:
                kwargs[f.name] = value
        elif value != getattr(defaults, f.name):
            raise ConfigError(f"config key 'model.{f.name}' is set, but model {cfg.name!r} takes "
                              f"no {f.name!r} argument; its arguments: {_arguments(params)}")
    if cfg.name == "spec" and cfg.spec is None:
        raise ConfigError("model.name=spec needs a spec: aevb train --spec FILE.yaml")
    for key, value in cfg.options.items():
        if key not in params and not takes_any:
            raise ConfigError(f"config key 'model.options.{key}': model {cfg.name!r} takes no "
                              f"{key!r} argument; its arguments: {_arguments(params)}")
        kwargs[key] = value
    try:
        model = cls(**kwargs)
    except SpecError as exc:
        raise ConfigError(str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"could not build model {cfg.name!r}: {exc}") from None
    if not isinstance(model, LatentVariableModel):
        # a plain PyroModule keeping the contract: give it the base class's data plate defaults
        for attr in ("observed_sites", "labels"):
            if not hasattr(model, attr):
                setattr(model, attr, getattr(LatentVariableModel, attr))
    try:
        labels_of(model)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return model


def _arguments(params) -> str:
    return ", ".join(n for n in params if n != "self") or "(none)"
