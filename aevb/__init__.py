"""aevb: Auto-Encoding Variational Bayes and its family as Pyro model/guide pairs.

The one import name. What is learned lives in :mod:`aevb.models`, how it is learned in
:mod:`aevb.inference`; this package is the face: :func:`fit`, :func:`load`, :func:`evaluate`,
configuration (:mod:`aevb.config`), data sources (:mod:`aevb.data`), sweeps (:func:`sweep`,
:mod:`aevb.sweeps`), experiments (:mod:`aevb.experiments`), pictures and the ``aevb`` command
line (:mod:`aevb.cli`).

::

    import aevb
    run = aevb.fit(aevb.VAE(x_shape=(1, 28, 28), z_dim=16), data=x_train, elbo="iwae",
                   num_particles=5, epochs=10)
    run.evaluate(x_test, num_samples=5000)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import lazy_loader

if TYPE_CHECKING:
    from aevb.models import ModelSpec

__version__ = "0.1.0"

# resolved on first use (PEP 562), so that ``aevb --help`` and a config's typo answer without
# importing torch, Pyro and torchvision first
__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "inference": ["OBJECTIVES", "AevbError", "CheckpointError", "ConfigError", "DataError",
                  "ImportanceWeightedELBO", "Objective", "RunDirError", "Split",
                  "build_objective"],
    "models": ["DATA_PLATE", "DLGM", "MODELS", "NETWORKS", "POSTERIORS", "VAE", "VQVAE", "Batch",
               "LatentVariableModel", "LinearGaussianVAE", "ModelSpec", "SigmoidBeliefNet",
               "SpecError", "SpecModel", "compile_spec", "register_model", "register_network"],
    "api": ["Run", "evaluate", "fit", "load"],
    "config": ["Config", "load_config"],
    "data": ["DATASETS"],
    "sweeps": ["sweep"],
})
__all__ += ["load_spec", "__version__"]


def load_spec(source: str | Path | dict | ModelSpec) -> ModelSpec:
    """A model spec from a YAML file, the name of a shipped spec (``"dlgm2"``), a mapping or a
    :class:`ModelSpec` (see :mod:`aevb.models.spec`)."""
    from aevb.configs import resolve
    from aevb.models.spec import load_spec as _load_spec

    if isinstance(source, str | Path):
        source = resolve(source, "spec")
    return _load_spec(source)

