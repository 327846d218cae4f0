"""aevb: Auto-Encoding Variational Bayes and its family as Pyro model/guide pairs.

The one import name. What is learned lives in :mod:`aevb.models`, how it is learned in
:mod:`aevb.inference`; this package is the face: :func:`fit`, :func:`load`, :func:`evaluate`,
configuration (:mod:`aevb.config`), data sources (:mod:`aevb.data`), experiments
(:mod:`aevb.experiments`), pictures and the ``aevb`` command line (:mod:`aevb.cli`).

::

    import aevb
    run = aevb.fit(aevb.VAE(x_shape=(1, 28, 28), z_dim=16), data=x_train, elbo="iwae",
                   num_particles=5, epochs=10)
    run.evaluate(x_test, num_samples=5000)
"""

from __future__ import annotations

from pathlib import Path

from aevb.inference import (
    OBJECTIVES,
    AevbError,
    CheckpointError,
    ConfigError,
    DataError,
    ImportanceWeightedELBO,
    Objective,
    RunDirError,
    Split,
    build_objective,
)
from aevb.models import (
    DATA_PLATE,
    DLGM,
    MODELS,
    NETWORKS,
    POSTERIORS,
    VAE,
    VQVAE,
    Batch,
    LatentVariableModel,
    LinearGaussianVAE,
    ModelSpec,
    SigmoidBeliefNet,
    SpecError,
    SpecModel,
    compile_spec,
    register_model,
    register_network,
)
from aevb.models.spec import load_spec as _load_spec

from .api import Run, evaluate, fit, load
from .config import Config, load_config
from .data import DATASETS

__version__ = "0.1.0"


def load_spec(source: str | Path | dict | ModelSpec) -> ModelSpec:
    """A model spec from a YAML file, the name of a shipped spec (``"dlgm2"``), a mapping or a
    :class:`ModelSpec` (see :mod:`aevb.models.spec`)."""
    from aevb.configs import resolve

    if isinstance(source, str | Path):
        source = resolve(source, "spec")
    return _load_spec(source)


__all__ = [
    "DATASETS", "DATA_PLATE", "DLGM", "MODELS", "NETWORKS", "OBJECTIVES", "POSTERIORS", "VAE",
    "VQVAE", "AevbError", "Batch", "CheckpointError", "Config", "ConfigError", "DataError",
    "ImportanceWeightedELBO", "LatentVariableModel", "LinearGaussianVAE", "ModelSpec", "Objective",
    "Run", "RunDirError", "SigmoidBeliefNet", "SpecError", "SpecModel", "Split",
    "build_objective", "compile_spec", "evaluate", "fit", "load", "load_config", "load_spec",
    "register_model", "register_network", "__version__",
]
