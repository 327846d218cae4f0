"""The variational objectives, chosen by name (``elbo=NAME``): see
:mod:`~aevb.inference.objectives.registry` for the table. One estimator per module:
:mod:`.importance` (IWAE, Rényi), :mod:`.syncfree` (Trace_ELBO / TraceMeanField_ELBO without
host reads), :mod:`.wakesleep` (RWS, wake-sleep), :mod:`.infovae` (InfoVAE, MMD-VAE, AAE) with its divergences
:mod:`.mmd` and :mod:`.adversarial`, :mod:`.annealing` (β and KL warm-up)."""

from .annealing import WEIGHTABLE, KLSchedule, KLWeight
from .importance import ImportanceWeightedELBO, RenyiBound
from .infovae import DIVERGENCES, AAEObjective, InfoVAEObjective, MMDObjective
from .registry import (
    OBJECTIVE_OPTIONS,
    OBJECTIVES,
    IncompatibleObjective,
    ModelTraits,
    Objective,
    ScoreFunction,
    ScoreFunctionELBO,
    build_objective,
    model_traits,
    objective_for_model,
)
from .syncfree import SyncFreeTrace_ELBO, SyncFreeTraceMeanField_ELBO
from .wakesleep import ReweightedWakeSleep

__all__ = [
    "AAEObjective", "DIVERGENCES", "OBJECTIVES", "OBJECTIVE_OPTIONS", "WEIGHTABLE",
    "ImportanceWeightedELBO",
    "IncompatibleObjective", "InfoVAEObjective", "KLSchedule", "KLWeight", "MMDObjective",
    "ModelTraits", "Objective",
    "RenyiBound", "ReweightedWakeSleep", "ScoreFunction", "ScoreFunctionELBO",
    "SyncFreeTraceMeanField_ELBO", "SyncFreeTrace_ELBO", "build_objective", "model_traits",
    "objective_for_model",
]
