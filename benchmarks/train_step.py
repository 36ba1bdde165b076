"""Training-step speed and memory: deltatune LoRA vs the Hugging Face + peft stack, same run.

    .venv/bin/python benchmarks/train_step.py                      # SmolLM2-135M, orgfacts batches
    .venv/bin/python benchmarks/train_step.py --steps 20 --threads 2 --batch-size 8

Both sides train the same LoRA (r 16, alpha 32, all linear layers, dropout 0) on the same
orgfacts SFT batches (chat template, loss on answer tokens only) with AdamW, alternating
step by step so machine noise hits both alike:
- baseline: `peft.get_peft_model` + `model(**batch, labels=...)` (HF computes logits for
  every position, then the loss);
- deltatune: `apply_method` + `model_lm_loss` (the vocabulary projection runs only where a
  label exists).
Reports median step time, tokens/s and the ratio, plus the peak RSS growth of one step of each
(activations + gradients, on the longest batch; Linux /proc)
(measured in separate subprocesses so one side's allocations do not hide the other's), and
writes benchmarks/results/train_step.json. Time nothing else on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results" / "train_step.json"


def batches(tokenizer, batch_size: int, n: int) -> list[dict]:
    from deltatune.config import DataConfig
    from deltatune.data import BucketedBatches, build_sft_dataset, collate, load_records

    data = build_sft_dataset(load_records("builtin:orgfacts/train"), tokenizer, DataConfig(train="x", max_length=256))
    order = BucketedBatches(data, batch_size, seed=0).batches(0)[:n]
    return [collate([data[i] for i in idx], tokenizer.pad_token_id) for idx in order]


def build(side: str):
    from transformers import AutoModelForCausalLM

    from deltatune.models.embedded import embedded_path

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(embedded_path("smollm2-135m"))
    if side == "peft":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))
    else:
        from deltatune.methods.core import apply_method
        from deltatune.methods.lora.config import LoraConfig

        apply_method(model, LoraConfig(name="lora", r=16, alpha=32, dropout=0.0, targets="all-linear"))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    return model, optimizer


def step(side: str, model, optimizer, batch) -> float:
    from deltatune.losses.lm import model_lm_loss

    t0 = time.perf_counter()
    if side == "peft":
        loss = model(**batch).loss
    else:
        loss, _ = model_lm_loss(model, batch)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def memory_probe(side: str, batch_size: int) -> None:
    """Child process: peak RSS growth (MiB) of one training step on the longest batch."""
    from transformers import AutoTokenizer

    from deltatune.models.embedded import embedded_path

    tokenizer = AutoTokenizer.from_pretrained(embedded_path("smollm2-135m"))
    batch = max(batches(tokenizer, batch_size, 200), key=lambda b: b["input_ids"].numel())
    model, optimizer = build(side)
    step(side, model, optimizer, batch)  # optimiser state now exists, as in a running job
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the peak (VmHWM) to now
    step(side, model, optimizer, batch)
    print(json.dumps({"peak_rss_growth_mib": round((_status_kib("VmHWM") - before) / 1024, 1)}))


def _status_kib(field: str) -> int:
    """A memory figure (KiB) from /proc/self/status: VmRSS now, VmHWM the peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-probe", choices=["peft", "deltatune"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_probe:
        return memory_probe(args.memory_probe, args.batch_size)

    from transformers import AutoTokenizer

    from deltatune.models.embedded import embedded_path

    tokenizer = AutoTokenizer.from_pretrained(embedded_path("smollm2-135m"))
    data = batches(tokenizer, args.batch_size, args.steps + 2)
    sides = {side: build(side) for side in ("peft", "deltatune")}
    times: dict[str, list[float]] = {side: [] for side in sides}
    for i, batch in enumerate(data):
        for side, (model, optimizer) in sides.items():
            elapsed = step(side, model, optimizer, batch)
            if i >= 2:  # the first steps warm up allocators and kernels
                times[side].append(elapsed)
    tokens = statistics.mean(int(b["attention_mask"].sum()) for b in data[2:])
    result = {"machine": platform.processor() or platform.machine(), "threads": args.threads,
              "batch_size": args.batch_size, "steps_timed": len(times["peft"])}
    for side, ts in times.items():
        med = statistics.median(ts)
        result[side] = {"median_step_s": round(med, 4), "tokens_per_s": round(tokens / med, 1)}
    for side in sides:
        out = subprocess.run([sys.executable, __file__, "--memory-probe", side, "--threads", str(args.threads),
                              "--batch-size", str(args.batch_size)], capture_output=True, text=True, check=True)
        result[side].update(json.loads(out.stdout.strip().splitlines()[-1]))
    result["speedup_deltatune_over_peft"] = round(result["peft"]["median_step_s"] / result["deltatune"]["median_step_s"], 3)
    result["memory_ratio_deltatune_over_peft"] = round(
        result["deltatune"]["peak_rss_growth_mib"] / max(result["peft"]["peak_rss_growth_mib"], 1e-9), 3)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
