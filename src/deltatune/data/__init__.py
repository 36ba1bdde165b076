"""deltatune.data."""
