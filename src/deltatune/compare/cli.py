"""`deltatune compare CONFIG --methods a,b,c [--seeds N] [--out DIR] [k=v ...]`: methods side by side.

    deltatune compare configs/smollm2/sft_lora.yaml --methods lora,dora,ia3,prompt,prefix,adapter,bitfit,freeze,full
    deltatune compare my.yaml --methods lora,ia3,bitfit --seeds 3 --out runs/cmp train.max_steps=50
    deltatune compare my.yaml --methods lora,ia3 --set ia3:train.lr=0.05      # one method's own override

Each method trains on the same data, budget and seeds, one run after another, in
OUT/runs/<method>-seed<k>/ (ordinary run dirs: `deltatune report/eval/serve` work on them).
Per method, `method:` and `train.lr` come from the base config when it is that method, else
from the method's ready YAML (`<recipe>_<method>.yaml`, then `sft_<method>.yaml`, looked up in
--method-configs, the config's folder, deltatune's configs/smollm2/), else the method's defaults
with the base lr. The k=v overrides then apply to every run, --set METHOD:k=v to one method's.
Rerun the same command to continue: finished runs are reused, interrupted ones resume, failed
ones are retried. Writes OUT/report.md, OUT/report.json and OUT/report.html; exits 1 when a
run failed (its error is in the reports), 2 on bad input (nothing trained).
"""

from __future__ import annotations

import argparse


class IntermixedParser(argparse.ArgumentParser):
    """Options and k=v overrides in any order (`CONFIG --methods a,b train.max_steps=5`): a plain
    parser stops filling the `overrides` list at the first option."""

    _inside = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inside:  # parse_known_intermixed_args calls back into this method
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def register(subparsers) -> None:
    p = subparsers.add_parser("compare", help="train several methods on the same data and budget; report side by side",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.__class__ = IntermixedParser  # add_parser builds the parent's class; this sub-command interleaves
    p.add_argument("config", help="the base YAML config (data, budget, evaluation shared by every run)")
    p.add_argument("overrides", nargs="*", help="dotted overrides for every run, e.g. train.max_steps=50")
    p.add_argument("--methods", required=True, help="comma-separated method names, e.g. lora,ia3,bitfit,full")
    p.add_argument("--seeds", type=int, default=1, help="seeds per method (train.seed, +1, ...); default 1")
    p.add_argument("--out", help="output folder (default runs/compare-<config name>)")
    p.add_argument("--set", action="append", default=[], metavar="METHOD:KEY=VALUE",
                   help="an override for one method's runs only, e.g. ia3:train.lr=0.05 (repeatable)")
    p.add_argument("--method-configs", metavar="DIR", help="folder of per-method YAMLs (<recipe>_<method>.yaml)")
    p.add_argument("--in-process", action="store_true",
                   help="train every run inside this process (no start-up per run; on a CPU a later run's peak "
                        "memory then includes heap an earlier one left); default: each run its own process")
    p.set_defaults(func=_compare)


def _compare(args) -> int:
    from deltatune.compare import compare

    summary = compare(args.config, args.methods, seeds=args.seeds, out=args.out, overrides=args.overrides,
                      per_method=args.set, method_configs=args.method_configs, isolate=not args.in_process)
    return 1 if any(r["status"] == "failed" for r in summary["runs"]) else 0
