"""Build the configured model, or take the user's own: any object keeping the contract of
:mod:`aevb.models.base`.

The constructor receives ``x_shape`` (when it takes it), the ``model.*`` config keys that are
set (``z_dim``, ``hidden_sizes``, ``spec``, ...) and ``model.options``. A key left unset is not
passed, so the constructor's default applies; a key the user set that the constructor does not
take is refused instead of silently dropped. :func:`model_arguments` says what the model was
built with, for the run's record.
"""

from __future__ import annotations

import inspect
from dataclasses import fields

from torch import nn

from aevb.config import ModelConfig
from aevb.inference.errors import ConfigError
from aevb.models.base import LatentVariableModel, labels_of
from aevb.models.loading import ModelLoadError, check_model_class, is_file_reference, resolve_model
from aevb.models.spec import SpecError

_NOT_ARGUMENTS = ("name", "options")


def model_class(cfg: ModelConfig, trust_code: bool = True) -> type:
    """The class ``cfg.name`` names. A user's file is imported only with ``trust_code``."""
    if is_file_reference(cfg.name) and not trust_code:
        raise ConfigError(f"this run's model is defined in the file {cfg.name.rsplit(':', 1)[0]}; "
                          f"importing it runs its code. If you trust it, pass --trust-model-file "
                          f"(aevb.load(..., trust_code=True)), or pass the model yourself "
                          f"(aevb.load(..., model=MyModel(...)))")
    try:
        return resolve_model(cfg.name)
    except ModelLoadError as exc:
        raise ConfigError(f"bad value for config key 'model.name': {exc}") from None


def constructor_kwargs(cfg: ModelConfig, cls: type, x_shape) -> dict:
    """The arguments ``cls`` is called with: ``x_shape``, the set ``model.*`` keys, options."""
    params = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs: dict = {}
    if "x_shape" in params or takes_any:
        kwargs["x_shape"] = tuple(x_shape)
    for f in fields(ModelConfig):
        value = getattr(cfg, f.name)
        if f.name in _NOT_ARGUMENTS or value is None:
            continue
        if f.name not in params and not takes_any:
            raise ConfigError(f"config key 'model.{f.name}' is set, but model {cfg.name!r} takes "
                              f"no {f.name!r} argument; its arguments: {_arguments(params)}")
        kwargs[f.name] = value
    if cfg.name == "spec" and cfg.spec is None:
        raise ConfigError("model.name=spec needs a spec: aevb train --spec FILE.yaml")
    for key, value in cfg.options.items():
        if key not in params and not takes_any:
            raise ConfigError(f"config key 'model.options.{key}': model {cfg.name!r} takes no "
                              f"{key!r} argument; its arguments: {_arguments(params)}")
        kwargs[key] = value
    return kwargs


def build(cfg: ModelConfig, x_shape, trust_code: bool = True
          ) -> tuple[LatentVariableModel, dict]:
    """The model ``cfg`` configures for observations of ``x_shape``, and the arguments it was
    built with (:func:`model_arguments`)."""
    cls = model_class(cfg, trust_code)
    kwargs = constructor_kwargs(cfg, cls, x_shape)
    try:
        model = cls(**kwargs)
    except SpecError as exc:
        raise ConfigError(str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"could not build model {cfg.name!r}: {exc}") from None
    return adopt(model, cfg.name), model_arguments(cls, kwargs)


def build_model(cfg: ModelConfig, x_shape, trust_code: bool = True) -> LatentVariableModel:
    """The model ``cfg`` names, built for images of ``x_shape`` (see :func:`build`)."""
    return build(cfg, x_shape, trust_code)[0]


def adopt(model, name: str | None = None):
    """Check that ``model`` keeps the contract (an ``nn.Module`` with ``model`` and ``guide``)
    and give a plain ``PyroModule`` the base class's defaults (``observed_sites``, ``labels``)."""
    name = name or type(model).__name__
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model {name}: a {type(model).__name__} is not a PyroModule; a model "
                          f"is a PyroModule with model(batch) and guide(batch) methods")
    try:
        check_model_class(type(model), name)
    except ModelLoadError as exc:
        raise ConfigError(str(exc)) from None
    if not isinstance(model, LatentVariableModel):
        for attr in ("observed_sites", "labels"):
            if not hasattr(model, attr):
                setattr(model, attr, getattr(LatentVariableModel, attr))
    try:
        labels_of(model)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return model


def model_arguments(cls: type, kwargs: dict) -> dict:
    """Every constructor argument of ``cls`` as it was called: those given, and the defaults of
    the rest (what ``run.json`` records)."""
    try:
        bound = inspect.signature(cls).bind_partial(**kwargs)
    except TypeError:
        return dict(kwargs)
    bound.apply_defaults()
    out = {}
    for key, value in bound.arguments.items():
        if key == "spec":
            continue  # recorded whole in the config
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def _arguments(params) -> str:
    return ", ".join(n for n in params if n != "self") or "(none)"
