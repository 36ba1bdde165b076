"""AdapterDrop speed-up: training-step time with adapters in every block vs none in the lowest k.

    .venv/bin/python benchmarks/adapter_drop.py                      # CPU, 1 thread, small Llama
    .venv/bin/python benchmarks/adapter_drop.py --drops 0 4 6 --repeats 15 --out benchmarks/results/adapter_drop.json

Rücklé et al. 2021 (arXiv:2010.11918): with no adapters in blocks < k nothing there trains, so
autograd records no graph below block k and the backward pass stops there by itself; the
forward pass is unchanged. One training step = forward + LM loss + backward + AdamW step on a
random-weight Llama (Houlsby placement). The configurations are timed alternately (drop 0,
drop k, drop 0, ...) so drift on a shared machine hits all of them alike; each ratio is
median(step time, drop 0) / median(step time, drop k), also given per round (min .. max).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from deltatune.methods import core
from deltatune.methods.adapter import AdapterConfig


def make_model(layers: int, hidden: int, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=2048, hidden_size=hidden, intermediate_size=hidden * 8 // 3,
                         num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64,
                         max_position_embeddings=1024, tie_word_embeddings=True)
    return LlamaForCausalLM(config)


def make_step(model: LlamaForCausalLM, drop: int, ids: torch.Tensor):
    """(a closure running one training step of `model` with adapters from block `drop` up,
    the number of trainable elements)."""
    installed = core.apply_method(model, AdapterConfig(placement="houlsby", adapter_drop=drop))
    optimiser = torch.optim.AdamW(installed.trainable(), lr=1e-3)
    model.train()

    def step() -> float:
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    return step, sum(p.numel() for p in installed.trainable())


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    ids = torch.randint(0, 2048, (args.batch, args.seq), generator=torch.Generator().manual_seed(1))
    made = {drop: make_step(make_model(args.layers, args.hidden), drop, ids) for drop in args.drops}
    steps = {drop: step for drop, (step, _) in made.items()}
    for step in steps.values():  # warm-up: allocator, first AdamW state
        for _ in range(2):
            step()
    times: dict[int, list[float]] = {drop: [] for drop in args.drops}
    for _ in range(args.repeats):
        for drop, step in steps.items():
            times[drop].append(step())
    base = args.drops[0]
    rows = {}
    for drop in args.drops:
        per_round = [b / t for b, t in zip(times[base], times[drop])]
        rows[str(drop)] = {
            "median_step_s": round(statistics.median(times[drop]), 4),
            "speedup_vs_drop_0": round(statistics.median(times[base]) / statistics.median(times[drop]), 3),
            "per_round_ratio_min_max": [round(min(per_round), 3), round(max(per_round), 3)],
            "trainable": made[drop][1],
        }
    return {
        "what": "training step (forward + backward + AdamW) time, Houlsby adapters, adapter_drop k vs 0",
        "model": {"layers": args.layers, "hidden": args.hidden, "batch": args.batch, "seq": args.seq},
        "threads": args.threads,
        "repeats": args.repeats,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__,
        "by_adapter_drop": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--drops", type=int, nargs="+", default=[0, 4, 6])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/adapter_drop.json"))
    args = parser.parse_args()
    if args.drops[0] != 0:
        args.drops = [0, *[d for d in args.drops if d != 0]]
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["by_adapter_drop"], indent=2))


if __name__ == "__main__":
    main()
