"""deltatune.serve."""
