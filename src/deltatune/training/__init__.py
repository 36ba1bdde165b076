"""deltatune.training."""
