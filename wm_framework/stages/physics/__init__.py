"""Physical understanding of a world model: ``stage`` (surprise at perturbations the env
offers, and the temporal straightness of latent trajectories)."""
