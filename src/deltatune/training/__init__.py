"""deltatune.training: the shared loop (loop.py), AdamW + schedules (optim.py), atomic
checkpoints (checkpoint.py), metrics.jsonl (metrics.py), progress bar, run-dir handling."""
