"""deltatune.losses."""
