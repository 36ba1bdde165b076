"""`deltatune train CONFIG [section.key=value ...] [--resume]`: run the recipe the config names.

    deltatune train configs/smollm2/sft_lora.yaml
    deltatune train configs/smollm2/sft_lora.yaml train.lr=1e-4 method.r=16 output.dir=runs/r16
    deltatune train configs/smollm2/sft_lora.yaml --resume     # continue from the last checkpoint
"""

from __future__ import annotations

import argparse
import importlib

from deltatune.recipes import RECIPES


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="fine-tune a model as a YAML config says",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="YAML config file (see configs/)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-4 method.r=16")
    p.add_argument("--resume", action="store_true", help="continue the run in output.dir from its latest checkpoint")
    p.set_defaults(func=_train)


def _train(args) -> int:
    from deltatune.config import load_config

    cfg = load_config(args.config, args.overrides)
    recipe = importlib.import_module(RECIPES[cfg.recipe])
    recipe.run(cfg, resume=args.resume)
    return 0
