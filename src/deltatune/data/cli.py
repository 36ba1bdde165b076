"""`deltatune data ...` sub-commands.

    deltatune data make orgfacts --out data/orgfacts
    deltatune data check data/orgfacts/train.jsonl [--model smollm2-135m] [--format auto]
                         [--max-length 512] [--train-on-prompt] [--system-prompt TEXT]

`make` writes a generated dataset from `deltatune.datasets`. `check` loads `--model`'s
tokenizer and hands it to `check.check_data`: this module is the only one in deltatune.data
that imports model code (`deltatune.models`); the pipeline itself never does.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="make built-in datasets, check a data file")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    make = sub.add_parser("make", help="write a built-in dataset's splits as JSONL")
    make.add_argument("name", help="built-in dataset name: " + _builtin_names())
    make.add_argument("--out", required=True, help="folder to write SPLIT.jsonl files into")
    make.set_defaults(func=cmd_make)

    check = sub.add_parser("check", help="counts, length histogram, truncation, masked first example")
    check.add_argument("file", help="a .jsonl/.json/.csv file or builtin:orgfacts/train")
    check.add_argument("--model", default="smollm2-135m", help="model whose tokenizer/template to use")
    check.add_argument("--format", default="auto", choices=["auto", "alpaca", "messages", "text"])
    check.add_argument("--max-length", type=int, default=512)
    check.add_argument("--train-on-prompt", action="store_true", help="train on prompt tokens too")
    check.add_argument("--system-prompt", default=None, help="system turn for records without one")
    check.set_defaults(func=cmd_check)


def cmd_make(args: argparse.Namespace) -> int:
    from deltatune.datasets import write_builtin

    for path in write_builtin(args.name, args.out):
        lines = sum(1 for _ in path.open(encoding="utf-8"))
        print(f"wrote {path} ({lines} records)")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from deltatune.data.check import check_data
    from deltatune.errors import DeltatuneError
    from deltatune.models.loader import load_tokenizer

    if args.max_length < 1:
        raise DeltatuneError("--max-length must be >= 1")
    tokenizer = load_tokenizer(args.model)
    print(check_data(args.file, tokenizer, fmt=args.format, max_length=args.max_length,
                     train_on_prompt=args.train_on_prompt, system_prompt=args.system_prompt,
                     color=sys.stdout.isatty()))
    return 0


def _builtin_names() -> str:
    """The built-in dataset names for the help text (generated, importing no model code)."""
    from deltatune.datasets import dataset_names

    return ", ".join(dataset_names())
