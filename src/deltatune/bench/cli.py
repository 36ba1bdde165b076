"""`deltatune bench`: deltatune against the Hugging Face stack on one fixed workload, side by side.

    deltatune bench                                        # lora-sft, embedded SmolLM2-135M, 16 steps
    deltatune bench --workload full-sft --steps 16 --threads 2
    deltatune bench --workload dpo --json                  # one JSON object on stdout
    deltatune bench --model DIR --steps 2 --out /tmp/b     # any local HF causal-LM folder
    deltatune bench --deltatune-opt max_grad_norm=0.5      # a deltatune config key, deltatune side only

Workloads: lora-sft, full-sft, qlora-sft (bitsandbytes 4-bit on the CPU), dpo. Baselines:
`hf_loop` (a minimal transformers + peft loop) and `trl` (TRL's SFTTrainer / DPOTrainer with
peft). Writes benchmarks/results/bench_<workload>.json and .md (or under --out) and prints the
table (or, with --json, the whole result, whose `baselines.<name>` hold `tokens_per_s_ratio`
and `peak_memory_ratio`, deltatune / baseline). Time nothing else on the machine meanwhile.
How the sides are kept equal and alternated: deltatune.bench (package docstring).
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

DEFAULT_OUT = Path("benchmarks/results")
BASELINE_NAMES = {"hf-loop": "hf_loop", "trl": "trl"}


def register(subparsers) -> None:
    from deltatune.bench.workloads import WORKLOADS

    p = subparsers.add_parser("bench", help="tokens/s, memory, loss, MFU: deltatune vs transformers+peft and TRL",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", default="lora-sft", choices=list(WORKLOADS))
    p.add_argument("--model", default="smollm2-135m", help="embedded alias or local HF folder (default: smollm2-135m)")
    p.add_argument("--steps", type=int, default=16, help="timed optimiser steps per side (default 16)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first, per side (default 2)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=None, help="torch threads per side (default: torch's, i.e. "
                                                             "OMP_NUM_THREADS or the cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-length", type=int, default=256, help="token cap per example (default 256)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the workload's)")
    p.add_argument("--baselines", default="hf-loop,trl", help="comma list of hf-loop, trl (default both)")
    p.add_argument("--trl-padding-free", default="auto", choices=["auto", "on", "off"],
                   help="TRL SFT padding_free (auto: on only under FlashAttention, as TRL documents)")
    p.add_argument("--deltatune-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="a deltatune config key for the deltatune side (bare KEY = train.KEY); repeatable")
    p.add_argument("--matmul-sizes", default="1024,2048",
                   help="square fp32 matmul sizes for the machine's peak (default 1024,2048)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    # tests: every side on a thread of this process (no start-up cost; memory is not measured)
    p.add_argument("--inline", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"folder for the files (default {DEFAULT_OUT})")
    p.set_defaults(func=_bench)


def _bench(args) -> int:
    import torch

    from deltatune.bench import report
    from deltatune.bench.runner import run_bench
    from deltatune.bench.workloads import BenchSpec
    from deltatune.models.loader import resolve_model_path

    baselines = _baselines(args.baselines)
    sizes = _sizes(args.matmul_sizes)
    threads = args.threads if args.threads is not None else torch.get_num_threads()
    spec = BenchSpec(workload=args.workload, model=resolve_model_path(args.model), steps=args.steps,
                     warmup=args.warmup, batch_size=args.batch_size, threads=threads, seed=args.seed,
                     max_length=args.max_length, lr=args.lr, deltatune_opts=list(args.deltatune_opt),
                     trl_padding_free=args.trl_padding_free)
    result = run_bench(spec, baselines, sizes, command=_command(args, threads), inline=args.inline)
    json_path, md_path = report.write(result, args.out)
    if args.json:
        print(json.dumps(result))
    else:
        print(report.markdown(result))
        print(f"wrote {json_path} and {md_path}")
    return 0


def _baselines(text: str) -> tuple[str, ...]:
    from deltatune.errors import DeltatuneError

    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BASELINE_NAMES]
    if unknown or not names:
        raise DeltatuneError(f"--baselines {text!r}: use a comma list of {', '.join(BASELINE_NAMES)}")
    return tuple(dict.fromkeys(BASELINE_NAMES[n] for n in names))


def _sizes(text: str) -> tuple[int, ...]:
    from deltatune.errors import DeltatuneError

    try:
        sizes = tuple(int(n) for n in text.split(",") if n.strip())
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise DeltatuneError(f"--matmul-sizes {text!r}: use a comma list of positive ints, e.g. 1024,2048")
    return sizes


def _command(args, threads: int) -> str:
    """The command line that reproduces this run (every option that shapes it, spelled out)."""
    parts = ["deltatune", "bench", "--workload", args.workload, "--model", args.model, "--steps", str(args.steps),
             "--warmup", str(args.warmup), "--batch-size", str(args.batch_size), "--threads", str(threads),
             "--seed", str(args.seed), "--max-length", str(args.max_length), "--baselines", args.baselines]
    if args.lr is not None:
        parts += ["--lr", str(args.lr)]
    if args.trl_padding_free != "auto":
        parts += ["--trl-padding-free", args.trl_padding_free]
    for item in args.deltatune_opt:
        parts += ["--deltatune-opt", item]
    return shlex.join(parts)
