"""deltatune.recipes."""
