"""deltatune.methods."""
