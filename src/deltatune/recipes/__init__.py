"""deltatune.recipes: one file per training stage (sft.py, pt.py); `deltatune train` in cli.py."""
