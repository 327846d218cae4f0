"""Evaluation of a trained model in nats (:mod:`.likelihood`) and gradient-estimator
diagnostics (:mod:`.diagnostics`)."""

from .diagnostics import (
    GradientStats,
    estimator_objective,
    gradient_statistics,
    parameter_groups,
    parse_estimator,
)
from .likelihood import active_units, evaluate, importance_sampled, mean_elbo

__all__ = [
    "GradientStats", "active_units", "estimator_objective", "evaluate", "gradient_statistics",
    "parse_estimator",
    "importance_sampled", "mean_elbo", "parameter_groups",
]
