"""`deltatune estimate CONFIG [section.key=value ...] [--memory 8GiB] [--json]`: predict a run's
peak memory and seconds per step before any weight is loaded.

    deltatune estimate configs/smollm2/sft_lora.yaml
    deltatune estimate configs/smollm2/sft_full.yaml train.batch_size=4 --memory 3GiB
    deltatune estimate configs/smollm2/sft_qlora.yaml --json

Reads the model's config.json and safetensors headers, tokenises data.train as the recipe would,
and measures a 1- and a 3-layer copy of the model once (cached under $DELTATUNE_HOME/estimate).
With --memory and a peak above it, lists what to change, each with its own estimate.
"""

from __future__ import annotations

import argparse
import json
import re

from deltatune.errors import DeltatuneError

UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
         "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40}


def register(subparsers) -> None:
    p = subparsers.add_parser("estimate", help="predict peak memory and step time of a run, before loading it",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="YAML config file (see configs/)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.batch_size=4")
    p.add_argument("--memory", help="a memory budget (e.g. 8GiB, 6GB, 3000MiB): say what to change if the run is over it")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.set_defaults(func=_estimate)


def parse_memory(text: str) -> int:
    """Bytes of a size such as '8GiB', '6 GB', '3000MiB', '2.5g' or a plain number of bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text or "")
    unit = match.group(2).lower() if match else None
    if match is None or unit not in UNITS or float(match.group(1)) <= 0:
        raise DeltatuneError(f"--memory {text!r}: expected a size such as 8GiB, 6GB or 3000MiB")
    return int(float(match.group(1)) * UNITS[unit])


def _estimate(args) -> int:
    from deltatune.config import load_config
    from deltatune.estimate import estimate_run

    limit = parse_memory(args.memory) if args.memory else None
    cfg = load_config(args.config, args.overrides)
    estimate = estimate_run(cfg, memory_limit=limit, label=args.config)
    print(json.dumps(estimate.as_dict()) if args.json else estimate.table())
    return 0
