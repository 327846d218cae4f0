"""aevb's latent-variable models: Pyro model/guide pairs with networks registered as modules."""

from .base import DATA_PLATE, Batch, LatentVariableModel
from .deep import DLGM, SigmoidBeliefNet
from .families import FAMILIES, VALUE_TYPES
from .linear_gaussian import LinearGaussianVAE
from .networks import ACTIVATIONS, NETWORKS, register_network
from .posteriors import POSTERIORS  # registers lowrank, full, mixture, planar, iaf families
from .registry import Registry, UnknownNameError
from .spec import ModelSpec, SpecError, SpecModel, compile_spec, load_spec
from .vae import VAE
from .vqvae import VQVAE
from .zoo import MODELS, register_model

__all__ = [
    "ACTIVATIONS", "DATA_PLATE", "DLGM", "FAMILIES", "MODELS", "NETWORKS", "POSTERIORS",
    "VALUE_TYPES", "VAE", "VQVAE", "Batch", "LatentVariableModel", "LinearGaussianVAE", "ModelSpec",
    "Registry", "SigmoidBeliefNet", "SpecError", "SpecModel", "UnknownNameError", "compile_spec",
    "load_spec", "register_model", "register_network",
]
