"""Models as data: a spec (YAML or dataclasses) compiled into a Pyro model/guide pair."""

from .compiler import SpecModel, compile_spec
from .graph import CycleError, topological_order
from .schema import (
    InputSpec,
    LatentSpec,
    ModelSpec,
    NetworkSpec,
    ObservedSpec,
    PosteriorSpec,
    PriorSpec,
    SometimesObservedSpec,
    SpecError,
    load_spec,
)

__all__ = [
    "CycleError", "InputSpec", "LatentSpec", "ModelSpec", "NetworkSpec", "ObservedSpec",
    "PosteriorSpec", "PriorSpec", "SometimesObservedSpec", "SpecError", "SpecModel",
    "compile_spec", "load_spec", "topological_order",
]
