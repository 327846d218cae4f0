"""aevb's latent-variable models: Pyro model/guide pairs with networks registered as modules."""

from .base import DATA_PLATE, Batch, LatentVariableModel
from .likelihoods import LIKELIHOODS
from .linear_gaussian import LinearGaussianVAE
from .networks import ACTIVATIONS, NETWORKS
from .registry import Registry, UnknownNameError
from .vae import VAE
from .zoo import MODELS, register_model

__all__ = [
    "ACTIVATIONS", "DATA_PLATE", "LIKELIHOODS", "MODELS", "NETWORKS", "VAE", "Batch",
    "LatentVariableModel", "LinearGaussianVAE", "Registry", "UnknownNameError", "register_model",
]
