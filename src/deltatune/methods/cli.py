"""`deltatune methods [NAME]`: the fine-tuning methods this install has, from the registry.

    deltatune methods            # one line each: name, merge, peft layout, what it is
    deltatune methods dora       # and a method's config keys with their defaults

Every row comes from `deltatune.methods.registry.METHODS`, so a new method shows up here as
soon as it has its registry row.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("methods", help="list the fine-tuning methods (method.name) and their keys",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", help="a method.name: also print its config keys and defaults")
    p.set_defaults(func=_methods)


def method_table() -> str:
    """One line per method: name, mergeable, peft layout, summary."""
    from deltatune.methods.registry import METHODS

    width = max(len(name) for name in METHODS)
    lines = [f"{'method.name'.ljust(width)}  merge  peft layout      what it is"]
    for name, method in METHODS.items():
        peft_type = method.peft.peft_type if method.peft else "-"
        merge = "yes" if method.mergeable else "no"
        lines.append(f"{name.ljust(width)}  {merge.ljust(5)}  {peft_type.ljust(15)}  {method.summary}")
    return "\n".join(lines)


def method_keys(name: str) -> str:
    """A method's config keys with their defaults (the YAML's `method:` section)."""
    from deltatune.methods.registry import get_method

    method = get_method(name)  # DeltatuneError naming the known methods
    lines = [f"method.name: {name} — {method.summary}"]
    for key, field in method.config_cls.model_fields.items():
        if key != "name":
            lines.append(f"  method.{key}: {field.default!r}")
    return "\n".join(lines)


def _methods(args) -> int:
    print(method_keys(args.name) if args.name else method_table())
    return 0
