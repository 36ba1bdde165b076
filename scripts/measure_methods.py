"""Measure the fine-tuning methods side by side on this machine: the README's method table.

    .venv/bin/python scripts/measure_methods.py --methods lora dora pissa lora_fa delta_lora adalora qlora \
        --set train.max_steps=60 train.batch_size=8 --runs runs/methods --out benchmarks/results/methods_smollm2

Each method is its ready config, `configs/smollm2/sft_<method>.yaml`, trained by `deltatune train`
in its own process (so each run's peak resident memory is its own) with the `--set` overrides
applied to every run: the same data, budget and seed for all; `METHOD:key=value` applies to that
method only (e.g. `adalora:method.tinit=5` to fit its schedule into a short budget). A finished
run dir is reused.
Writes <out>.json (every run's numbers) and <out>.md (the table): trainable parameters (count
and % of the model), peak resident memory (of the process, and of the training phase alone),
training time and tokens/s over the optimiser steps,
wall time of the whole run (evaluations included), held-out test accuracy, and the forgetting
measures (robust probe greedy / sampled change in points, KL from the base).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "smollm2"


def overrides_for(method: str, overrides: list[str]) -> list[str]:
    """The shared `k=v` overrides plus those written `METHOD:k=v` for this method."""
    mine = []
    for item in overrides:
        owner, sep, rest = item.partition(":")
        if sep and "=" not in owner:
            if owner == method:
                mine.append(rest)
        else:
            mine.append(item)
    return mine


def run_one(method: str, overrides: list[str], seed: int, runs: Path, label: str | None = None) -> dict:
    """Train one method (or reuse its finished run) and read its numbers back; `label` names the
    run dir and the row when one method runs under several settings (default: the method)."""
    overrides = overrides_for(method, overrides)
    label = label or method
    out = runs / f"{label}-seed{seed}"
    timing = out / "wall_seconds.json"
    if not ((out / "eval.json").is_file() and timing.is_file()):
        command = [sys.executable, "-m", "deltatune", "train", str(CONFIGS / f"sft_{method}.yaml"),
                   *overrides, f"train.seed={seed}", f"output.dir={out}"]
        if out.is_dir():
            command.append("--resume")
        started = time.perf_counter()
        subprocess.run(command, check=True, cwd=ROOT)
        timing.write_text(json.dumps({"seconds": round(time.perf_counter() - started, 1)}))
    report = json.loads((out / "eval.json").read_text())
    after, params, usage = report["after"], report.get("parameters", {}), report.get("resources") or {}
    return {
        "method": method, "label": label, "seed": seed, "overrides": overrides, "run_dir": str(out.relative_to(ROOT) if out.is_relative_to(ROOT) else out),
        "steps": report["steps"], "trainable": params.get("trainable"), "total": params.get("total"),
        "peak_rss_mib": usage.get("peak_rss_mib"), "train_peak_rss_mib": usage.get("train_peak_rss_mib"),
        "train_seconds": usage.get("train_seconds"),
        "tokens_per_s": usage.get("tokens_per_s"), "wall_seconds": json.loads(timing.read_text())["seconds"],
        "test_before": ((report.get("before") or {}).get("test") or {}).get("contains"),
        "test_after": (after.get("test") or {}).get("contains"), "val_after": (after.get("val") or {}).get("loss"),
        "method_report": report.get("method_report"), **report.get("forgetting", {}),
    }


def markdown(rows: list[dict], overrides: list[str]) -> str:
    def num(value, fmt: str, scale: float = 1.0) -> str:
        return "-" if value is None else format(value if scale == 1.0 else value * scale, fmt)

    lines = [f"Overrides on every run: `{' '.join(overrides) or '(none)'}`", "",
             "| method | trainable (count, %) | peak RSS: process / training | train time | tokens/s | wall (with evals) "
             "| held-out test | probe greedy / sampled (pts) | KL from base |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        share = r["trainable"] / r["total"] if r.get("trainable") is not None and r.get("total") else None
        lines.append(
            f"| {r.get('label', r['method'])} | {num(r.get('trainable'), ',')} ({num(share, '.3f', 100)}%) "
            f"| {num(r.get('peak_rss_mib'), '.2f', 1 / 1024)} / {num(r.get('train_peak_rss_mib'), '.2f', 1 / 1024)} GiB | {num(r.get('train_seconds'), '.1f', 1 / 60)} min "
            f"| {num(r.get('tokens_per_s'), '.0f')} | {num(r['wall_seconds'], '.1f', 1 / 60)} min "
            f"| {num(r.get('test_before'), '.1f', 100)}% -> {num(r.get('test_after'), '.1f', 100)}% "
            f"| {num(r.get('probe_greedy_change'), '+.1f')} / {num(r.get('probe_sampled_change'), '+.1f')} "
            f"| {num(r.get('kl'), '.4f')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", required=True, help="names of configs/smollm2/sft_<name>.yaml")
    parser.add_argument("--set", nargs="*", default=[], dest="overrides", help="k=v overrides for every run")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "methods")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "methods_smollm2")
    parser.add_argument("--tag", default="", help="appended to each run's name (its dir and row): "
                        "another setting of the same methods, e.g. --tag=-lr1e-3")
    args = parser.parse_args()
    missing = [m for m in args.methods if not (CONFIGS / f"sft_{m}.yaml").is_file()]
    if missing:
        parser.error(f"no config for {missing}: expected configs/smollm2/sft_<name>.yaml")

    from deltatune.atomic import write_json_atomic, write_text_atomic

    rows = []
    for method in args.methods:
        for seed in args.seeds:
            rows.append(run_one(method, args.overrides, seed, args.runs, label=method + args.tag))
            # written after every run: an interrupted sweep keeps its numbers
            write_json_atomic(args.out.with_suffix(".json"), {"overrides": args.overrides, "rows": rows})
            write_text_atomic(args.out.with_suffix(".md"), markdown(rows, args.overrides))
    print(markdown(rows, args.overrides))


if __name__ == "__main__":
    main()
