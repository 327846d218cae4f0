"""What a trained latent-variable model is for, beyond its figures: paths through latent space
(:mod:`.interpolation`)."""
