"""deltatune.losses: one standalone function per loss (lm.py: causal LM on labelled positions)."""
