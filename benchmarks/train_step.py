"""Training-step speed and memory, deltatune vs the Hugging Face stack: now `deltatune bench`.

    .venv/bin/python benchmarks/train_step.py [--steps 16 --threads 2 ...]   # == deltatune bench [...]

This script used to hold a LoRA-only comparison against a minimal transformers + peft loop;
`deltatune bench` (src/deltatune/bench/) runs that comparison plus TRL, full fine-tuning,
QLoRA and DPO, and writes benchmarks/results/bench_<workload>.{json,md}. Arguments are passed
through unchanged.
"""

import sys

from deltatune.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
