"""The `deltatune` command: one entry point, sub-commands map to recipes and tools.

    deltatune train configs/smollm2/sft_lora.yaml train.lr=1e-4 method.r=16 [--resume]
    deltatune data make orgfacts --out data/     deltatune data check FILE
    deltatune eval RUN_DIR [--data FILE]          deltatune generate RUN_DIR "prompt"
    deltatune merge RUN_DIR --out DIR             deltatune export RUN_DIR --format peft --out DIR
    deltatune serve --model BASE --adapter NAME=RUN_DIR    deltatune chat RUN_DIR
    deltatune methods [NAME]                      the fine-tuning methods and their keys
    deltatune score RM_RUN "prompt" "answer"      the reward a trained reward model gives
    deltatune label PROMPTS --model M --judge J --out prefs.jsonl   preference pairs from a judge (RLAIF)
    deltatune estimate CONFIG [k=v ...] [--memory 8GiB] [--json]   peak memory and step time, before loading
    deltatune bench [--workload lora-sft|full-sft|qlora-sft|dpo] [--steps N] [--json]   vs transformers+peft and TRL
    deltatune report RUN_DIR                      the run's HTML page (RUN_DIR/report.html; train writes it too)
    deltatune compare CONFIG --methods lora,ia3,bitfit [--seeds 3] [--out DIR] [k=v ...]   methods side by side

Each package owns its sub-commands in a `cli.py` with `register(subparsers)`; this file only
assembles them and turns `DeltatuneError` into a clean message and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from deltatune.errors import DeltatuneError

# modules that define `register(subparsers)`, one per package that owns commands
COMMAND_MODULES = [
    "deltatune.recipes.cli",
    "deltatune.methods.cli",
    "deltatune.data.cli",
    "deltatune.eval.cli",
    "deltatune.export.cli",
    "deltatune.serve.cli",
    "deltatune.rlaif.cli",
    "deltatune.preference.cli",
    "deltatune.bench.cli",
    "deltatune.estimate.cli",
    "deltatune.reports.cli",
    "deltatune.compare.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deltatune", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except DeltatuneError as err:
        print(f"deltatune: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("deltatune: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
