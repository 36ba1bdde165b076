"""A comparison's numbers: each run's measures read from its own files, then mean ± std per method.

    rows = [run_measures(run_dir) for ...]        # {"trainable_params": 8192, "test.contains": 0.5, ...}
    stats = aggregate([0.5, 0.7])                 # {"mean": 0.6, "std": 0.1414, "n": 2, "values": [0.5, 0.7]}

Every value is copied from the run's eval.json, metrics.jsonl or adapter folder (nothing is
re-measured), so the report always equals what each run says about itself. The spread over
seeds is the sample standard deviation (n - 1), reported with n; one seed has no spread.
Memory is the training phase's peak (`train_peak_rss_mib`, or the CUDA peak on a GPU). By
default every run trains in its own process (compare.runner), so the figure is the run's own.
With `--in-process` the runs share one process, whose lifetime high-water mark (`peak_rss_mib`)
is the largest run's, and on a CPU the training-phase figure can carry heap an earlier run left
behind (the allocator keeps some); the CUDA peak is reset before each run either way.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from deltatune.reports.run_files import (RunFiles, adapter_bytes, number, peak_memory_mib, primary_metric, read_run,
                                         split_metrics, train_wall_seconds)

# (key, label, unit) of the per-run measures, in report order; test metrics are added as found
FIELDS = [
    ("trainable_params", "trainable params", "count"),
    ("trainable_pct", "trainable %", "pct"),
    ("peak_memory_mib", "peak memory (MiB)", "number"),
    ("train_wall_s", "train wall time (s)", "number"),
    ("train_step_s", "time in optimiser steps (s)", "number"),
    ("tokens_per_s", "tokens/s", "number"),
    ("steps", "steps", "count"),
    ("final_val_loss", "final val loss", "number"),
    ("probe_greedy_change", "probe greedy contains change (pts)", "number"),
    ("probe_sampled_change", "probe sampled contains change (pts)", "number"),
    ("kl", "KL to base (nats/token)", "number"),
    ("adapter_bytes", "adapter size", "bytes"),
]
FORGETTING = ("probe_greedy_change", "probe_sampled_change", "kl")


def run_measures(run: RunFiles) -> dict[str, float | None]:
    """The measures of one run dir (None where the run has none)."""
    from deltatune.eval.measures import forgetting_measures

    ev = run.eval
    params = ev.get("parameters") or {}
    resources = ev.get("resources") or {}
    trainable, total = number(params.get("trainable")), number(params.get("total"))
    memory, _ = peak_memory_mib(resources)
    forgetting = ev.get("forgetting")
    if not isinstance(forgetting, dict) and isinstance(ev.get("after"), dict):
        forgetting = forgetting_measures(ev.get("before"), ev["after"])
    forgetting = forgetting or {}
    out = {"trainable_params": trainable,
           "trainable_pct": 100 * trainable / total if trainable is not None and total else None,
           "peak_memory_mib": memory,
           "train_wall_s": train_wall_seconds(run.metrics),
           "train_step_s": number(resources.get("train_seconds")),
           "tokens_per_s": number(resources.get("tokens_per_s")),
           "steps": number(ev.get("steps")),
           "final_val_loss": number(ev.get("final_val_loss")),
           "adapter_bytes": adapter_bytes(run.run_dir)}
    out.update({name: number(forgetting.get(name)) for name in FORGETTING})
    after = ev.get("after") if isinstance(ev.get("after"), dict) else {}
    for metric, value in split_metrics(after.get("test")).items():
        out[f"test.{metric}"] = value
    return out


def aggregate(values: list) -> dict:
    """{"mean", "std" (None for one value), "n", "values"} over the numeric values."""
    kept = [float(v) for v in values if number(v) is not None]
    if not kept:
        return {"mean": None, "std": None, "n": 0, "values": []}
    return {"mean": statistics.fmean(kept), "std": statistics.stdev(kept) if len(kept) > 1 else None,
            "n": len(kept), "values": kept}


def quality_metric(runs: list[RunFiles]) -> str:
    """The measure the charts rank methods by: the primary test metric of the first finished run
    that has a test split (higher is better), else the final validation loss."""
    for run in runs:
        after = run.eval.get("after") if isinstance(run.eval.get("after"), dict) else {}
        name = primary_metric(after.get("test"))
        if name:
            return f"test.{name}"
    return "final_val_loss"


def summarise(plan, outcomes: dict) -> dict:
    """report.json's body: the plan, every run (status, error, measures), per-method statistics."""
    runs, finished = [], []
    for planned in plan.runs:
        outcome = outcomes.get(planned.name)
        entry = {"name": planned.name, "method": planned.method, "seed": planned.seed,
                 "run_dir": str(planned.run_dir), "status": outcome.status if outcome else "pending",
                 "error": outcome.error if outcome else None, "traceback": outcome.traceback if outcome else None,
                 "resumed": bool(outcome and outcome.resumed), "measures": {}}
        if entry["status"] in ("finished", "reused") and Path(planned.run_dir).is_dir():
            files = read_run(planned.run_dir)
            if files.finished:
                entry["measures"] = run_measures(files)
                finished.append(files)
            else:
                entry["status"], entry["error"] = "failed", "the run ended without tuned-model numbers in eval.json"
        runs.append(entry)
    fixed = [key for key, _, _ in FIELDS]
    found = sorted({k for r in runs for k in r["measures"] if k not in fixed})  # the test metrics
    cut = fixed.index("final_val_loss") + 1
    keys = fixed[:cut] + found + fixed[cut:]
    methods = {}
    for method in plan.methods:
        mine = [r for r in runs if r["method"] == method]
        done = [r for r in mine if r["measures"]]
        methods[method] = {"runs": len(mine), "finished": len(done),
                           "failed": sum(r["status"] == "failed" for r in mine),
                           "errors": [f"{r['name']}: {r['error']}" for r in mine if r["status"] == "failed"],
                           "settings_source": plan.settings[method].source, "lr": _lr(plan, method),
                           "measures": {k: aggregate([r["measures"].get(k) for r in done]) for k in keys}
                           if done else {}}
    labels = {key: label for key, label, _ in FIELDS}
    labels.update({k: k.replace(".", " ", 1) for k in keys if k not in labels})
    return {**plan.describe(), "quality_metric": quality_metric(finished), "fields": keys, "labels": labels,
            "runs": runs, "summary": methods}


def _lr(plan, method: str) -> float | None:
    for run in plan.runs:
        if run.method == method:
            return run.cfg.train.lr
    return None
