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
    _print_estimate(cfg)
    recipe.run(cfg, resume=args.resume)
    return 0


def _print_estimate(cfg) -> None:
    """The run's predicted peak memory and step time in one line (deltatune.estimate), on rank 0
    only; a failing estimate prints a note and never stops the training."""
    import os

    if int(os.environ.get("RANK", "0")) != 0:
        return
    try:
        from deltatune.estimate import estimate_run

        print(estimate_run(cfg).summary_line(), flush=True)
    except Exception as err:  # noqa: BLE001 - the estimate is advice; training goes on without it
        print(f"estimate: skipped ({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''})",
              flush=True)
