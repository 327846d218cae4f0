"""How aevb learns: objectives (:mod:`.objectives`), the SVI training loop and its
checkpoints (:mod:`.training`), evaluation and diagnostics (:mod:`.evaluation`) and the
semi-supervised methods (:mod:`.semisupervised`). It imports :mod:`aevb.models`, never the
face (configuration, data sources, the command line)."""

from .batching import DataBundle, Split
from .errors import AevbError, CheckpointError, ConfigError, DataError, RunDirError
from .objectives import (
    OBJECTIVES,
    ImportanceWeightedELBO,
    IncompatibleObjective,
    Objective,
    build_objective,
    objective_for_model,
)

__all__ = [
    "OBJECTIVES", "AevbError", "CheckpointError", "ConfigError", "DataBundle", "DataError",
    "ImportanceWeightedELBO", "IncompatibleObjective", "Objective", "RunDirError", "Split",
    "build_objective", "objective_for_model",
]
