"""deltatune.eval."""
