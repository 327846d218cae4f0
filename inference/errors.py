"""Errors that the CLI reports as one clear line (what is wrong, and how to fix it)."""


class AevbError(Exception):
    """Base class of user-facing errors."""


class ConfigError(AevbError):
    """A bad configuration key or value."""


class DataError(AevbError):
    """Data that cannot be found or that the model cannot score."""


class CheckpointError(AevbError):
    """A missing, corrupt or incompatible checkpoint."""


class RunDirError(AevbError):
    """A run folder that cannot be used as asked (exists, missing, ...)."""


class DivergenceError(AevbError, FloatingPointError):
    """Training left the finite, plausible range (NaN or infinite loss, gradients or
    parameters, or an ELBO far below the untrained model's)."""
