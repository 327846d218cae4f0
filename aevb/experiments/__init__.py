"""Multi-run experiments that write results tables: :mod:`~aevb.experiments.semisupervised` (Kingma et al.
2014's M2, M1+M2 and a supervised baseline over label counts and seeds)."""

from .semisupervised import Experiment, ExperimentConfig, summarize

__all__ = ["Experiment", "ExperimentConfig", "summarize"]
