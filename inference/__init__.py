"""How aevb learns: objectives (:mod:`~aevb.inference.objectives`), the SVI training loop
and its checkpoints (:mod:`~aevb.inference.training`), evaluation and diagnostics
(:mod:`~aevb.inference.evaluation`) and the semi-supervised methods
(:mod:`~aevb.inference.semisupervised`). It imports :mod:`aevb.models`, never the face
(configuration, data sources, the command line)."""

import lazy_loader

# resolved on first use, so that importing aevb.inference.errors (the command line does, to
# answer bad input) does not import torch and Pyro
__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "batching": ["DataBundle", "Split"],
    "errors": ["AevbError", "CheckpointError", "ConfigError", "DataError", "RunDirError"],
    "objectives": ["OBJECTIVES", "ImportanceWeightedELBO", "IncompatibleObjective", "Objective",
                   "build_objective", "objective_for_model"],
})
