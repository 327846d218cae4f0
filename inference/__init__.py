"""aevb's inference: objectives, SVI training, evaluation, data, checkpoints and the CLI."""

from .config import Config, load_config
from .errors import AevbError, CheckpointError, ConfigError, DataError, RunDirError
from .importance import ImportanceWeightedELBO
from .objectives import OBJECTIVES, Objective, build_objective

__all__ = [
    "OBJECTIVES", "AevbError", "CheckpointError", "Config", "ConfigError", "DataError",
    "ImportanceWeightedELBO", "Objective", "RunDirError", "build_objective", "load_config",
]
