"""Find a model class by registry name or in a user's file (``path/to/my_model.py:MyModel``)."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

from torch import nn

from .zoo import MODELS

FILE_SEPARATOR = ".py:"


class ModelLoadError(ValueError):
    """A model name that does not lead to a class keeping the contract of :mod:`aevb.models.base`."""


def is_file_reference(name: str) -> bool:
    """Whether a model name refers to a file (``path.py`` or ``path.py:Name``)."""
    return FILE_SEPARATOR in name or name.endswith(".py")


def absolute_reference(name: str) -> str:
    """``path.py:Name`` with the path made absolute (so a run resumes from any folder)."""
    if not is_file_reference(name) or FILE_SEPARATOR not in name:
        return name
    path, attr = name.rsplit(":", 1)
    return f"{Path(path).expanduser().resolve()}:{attr}"


def import_file(path: Path):
    """Import a Python file once per process (a second call returns the same module, so its
    ``@register_model`` decorators run once)."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ModelLoadError(f"model file {str(path)!r} does not exist")
    module_name = "aevb_user_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise ModelLoadError(f"importing model file {str(path)!r} failed: "
                             f"{type(exc).__name__}: {exc}") from exc
    return module


def resolve_model(name: str) -> type:
    """The class for ``name``: a name in :data:`~aevb.models.zoo.MODELS`, or ``FILE.py:NAME`` where
    NAME is a class in FILE or a name FILE registers with ``@register_model``.

    :raises ModelLoadError: for a missing file or name, or an object that is no model.
    """
    if not is_file_reference(name):
        try:
            return MODELS.get(name)
        except KeyError as exc:
            raise ModelLoadError(f"{exc}; or give a file: model=path/to/my_model.py:MyModel") \
                from None
    if FILE_SEPARATOR not in name:
        raise ModelLoadError(f"{name!r} names a file but not the model in it; write "
                             f"{name}:ClassName")
    path, attr = name.rsplit(":", 1)
    module = import_file(Path(path))
    cls = getattr(module, attr, None)
    if cls is None and attr in MODELS:
        cls = MODELS.get(attr)
    if cls is None:
        found = [k for k, v in vars(module).items() if isinstance(v, type)
                 and v.__module__ == module.__name__ and issubclass(v, nn.Module)
                 and hasattr(v, "model") and hasattr(v, "guide")]
        raise ModelLoadError(f"{path} has no model {attr!r}; models found there: "
                             f"{', '.join(found) or '(none)'}")
    check_model_class(cls, name)
    return cls


def check_model_class(cls, name: str) -> None:
    """Refuse objects that cannot keep the contract (no ``model``/``guide``, not a module)."""
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise ModelLoadError(f"{name} is not a PyroModule / nn.Module class; a model is a "
                             "PyroModule with model(batch) and guide(batch) (see models/base.py)")
    missing = [m for m in ("model", "guide") if not callable(getattr(cls, m, None))]
    if missing:
        raise ModelLoadError(f"{name} has no {' and no '.join(missing)} method; a model needs "
                             "model(batch) and guide(batch) (see models/base.py)")
