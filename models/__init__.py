"""aevb's latent-variable models: Pyro model/guide pairs with networks registered as modules.

Names resolve on first use (:func:`lazy_loader.attach`); the registries are complete once
their module is imported (:mod:`.posteriors` registers lowrank, full, mixture, planar and iaf
families).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "base": ["DATA_PLATE", "Batch", "LatentVariableModel"],
    "deep": ["DLGM", "SigmoidBeliefNet"],
    "families": ["FAMILIES", "VALUE_TYPES"],
    "linear_gaussian": ["LinearGaussianVAE"],
    "networks": ["ACTIVATIONS", "NETWORKS", "register_network"],
    "posteriors": ["POSTERIORS"],
    "registry": ["Registry", "UnknownNameError"],
    "spec": ["ModelSpec", "SpecError", "SpecModel", "compile_spec", "load_spec"],
    "vae": ["VAE"],
    "vqvae": ["VQVAE"],
    "zoo": ["MODELS", "register_model"],
})
