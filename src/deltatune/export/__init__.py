"""deltatune.export."""
