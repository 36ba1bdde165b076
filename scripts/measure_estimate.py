"""How close `deltatune estimate` comes to a real run: estimate, then train a few steps, compare.

    python scripts/measure_estimate.py                         # the three SmolLM2 configs below
    python scripts/measure_estimate.py --steps 6 --configs configs/smollm2/sft_lora.yaml
    python scripts/measure_estimate.py --use-cache             # reuse a cached probe / calibration

Run it on a quiet machine (nothing else training): both the estimate's calibration and the
measured step times are timings. For each config, in fresh processes one after the other:

1. `deltatune estimate CONFIG OVERRIDES --json` with DELTATUNE_NO_CACHE=1 (a fresh probe and
   calibration, taken now, unless --use-cache);
2. `deltatune train CONFIG OVERRIDES`: the same config cut short (train.max_steps, no before /
   after measurement of the base, no mid-run validation, evaluation on a few examples), so
   the estimate and the run cover the same micro-batches;
3. the run's eval.json `resources`: peak_rss_mib (whole process: loading, replay, training) and
   train_peak_rss_mib (the training phase), train_seconds / steps; and from metrics.jsonl the
   tokens/s rows and each step's duration, whose median past the first WARMUP_STEPS is the
   steady-state step time the estimate predicts (the mean over a 6-step run is mostly the first
   steps' one-off allocations).

Ratios are estimate / measured (1.0 = exact; the target is within 0.75-1.25). The replay
answers and the base model's evaluation come from $DELTATUNE_HOME's caches as in a real run.
Results: printed, and saved to benchmarks/results/estimate_accuracy.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ["configs/smollm2/sft_lora.yaml", "configs/smollm2/sft_full.yaml", "configs/smollm2/sft_qlora.yaml"]
OUT = ROOT / "benchmarks" / "results" / "estimate_accuracy.json"
TOLERANCE = 0.25
# The first optimiser steps carry one-off costs a long run amortises: AdamW allocating its
# state (8 bytes per trainable parameter, zero-filled page by page: 1 GB for full fine-tuning of
# SmolLM2), the first touch of every weight and gradient page. The estimate's step time is the
# steady state; `steady_step_seconds` is the median step after the first WARMUP_STEPS.
WARMUP_STEPS = 2


def short_overrides(steps: int, run_dir: Path) -> list[str]:
    """Keep the run to `steps` optimiser steps and its evaluation to a few examples."""
    return [f"train.max_steps={steps}", "train.eval_every=null", "train.save_every=null", "train.log_every=1",
            "eval.before_after=false", "eval.probe_samples=0", "eval.max_examples=4",
            "data.forgetting_prompts=null", f"output.dir={run_dir}"]


def run_estimate(config: str, overrides: list[str], use_cache: bool) -> dict:
    env = dict(os.environ)
    if not use_cache:
        env["DELTATUNE_NO_CACHE"] = "1"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "deltatune", "estimate", config, *overrides, "--json"],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"estimate of {config} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["estimate_wall_seconds"] = round(time.perf_counter() - start, 1)
    return result


def run_training(config: str, overrides: list[str], run_dir: Path) -> dict:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "deltatune", "train", config, *overrides],
                          capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"training {config} failed:\n{done.stderr[-3000:]}")
    result = json.loads((run_dir / "eval.json").read_text())
    usage = result.get("resources") or {}
    steps = int(result.get("steps") or 0)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    per_step = [r["tokens_per_s"] for r in rows if r.get("event") == "train" and r.get("tokens_per_s")]
    times = [r["time"] for r in rows if r.get("event") == "train"]
    durations = [b - a for a, b in zip(times, times[1:])]  # steps 2..N (step 1 has no start row)
    steady = durations[WARMUP_STEPS - 1:]  # past the one-off costs of the first steps
    summary = next((line for line in done.stdout.splitlines() if line.startswith("estimate:")), None)
    return {"peak_rss_mib": usage.get("peak_rss_mib"), "train_peak_rss_mib": usage.get("train_peak_rss_mib"),
            "train_seconds": usage.get("train_seconds"), "steps": steps,
            "step_seconds": usage["train_seconds"] / steps if steps and usage.get("train_seconds") else None,
            "steady_step_seconds": statistics.median(steady) if steady else None,
            "step_durations": [round(d, 3) for d in durations],
            "tokens_per_s": usage.get("tokens_per_s"), "tokens_per_s_by_step": per_step,
            "wall_seconds": round(time.perf_counter() - start, 1), "train_start_estimate_line": summary}


def compare(estimate: dict, measured: dict) -> dict:
    mib = 2**20

    def ratio(a, b):
        return round(a / b, 3) if a and b else None

    ratios = {"peak_memory": ratio(estimate["peak_memory_bytes"] / mib, measured["peak_rss_mib"]),
              "train_peak_memory": ratio(estimate["train_peak_bytes"] / mib,
                                         measured["train_peak_rss_mib"] or measured["peak_rss_mib"]),
              "step_seconds": ratio(estimate["step_seconds"], measured["step_seconds"]),
              "steady_step_seconds": ratio(estimate["step_seconds"], measured.get("steady_step_seconds"))}
    within = {k: (None if v is None else abs(v - 1) <= TOLERANCE) for k, v in ratios.items()}
    return {"ratios": ratios, "within_25_percent": within}


def measure(config: str, steps: int, use_cache: bool) -> dict:
    run_dir = Path(tempfile.mkdtemp(prefix="estimate-run-"))
    overrides = short_overrides(steps, run_dir)
    try:
        estimate = run_estimate(config, overrides, use_cache)
        measured = run_training(config, overrides, run_dir)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    keep = ("peak_memory_bytes", "train_peak_bytes", "limited_by", "breakdown", "step_seconds", "timing",
            "parameters", "batches", "notes", "estimate_wall_seconds")
    overrides = [o for o in overrides if not o.startswith("output.dir=")]
    return {"config": config, "overrides": overrides, "estimate": {k: estimate.get(k) for k in keep},
            "measured": measured, **compare(estimate, measured)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=CONFIGS)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--use-cache", action="store_true", help="reuse a cached probe and calibration")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    results = []
    for config in args.configs:
        print(f"== {config}", flush=True)
        row = measure(config, args.steps, args.use_cache)
        results.append(row)
        m, e, r = row["measured"], row["estimate"], row["ratios"]
        print(f"   peak memory  estimate {e['peak_memory_bytes'] / 2**20:8.0f} MiB  measured {m['peak_rss_mib']:8.0f} MiB"
              f"  ratio {r['peak_memory']}", flush=True)
        print(f"   train peak   estimate {e['train_peak_bytes'] / 2**20:8.0f} MiB  measured "
              f"{(m['train_peak_rss_mib'] or m['peak_rss_mib']):8.0f} MiB  ratio {r['train_peak_memory']}", flush=True)
        print(f"   step         estimate {e['step_seconds']:8.2f} s    measured {m['step_seconds'] or 0:8.2f} s    "
              f"ratio {r['step_seconds']} (all steps)", flush=True)
        print(f"   steady step  estimate {e['step_seconds']:8.2f} s    measured {m['steady_step_seconds'] or 0:8.2f} s    "
              f"ratio {r['steady_step_seconds']} (median past step {WARMUP_STEPS})", flush=True)
    payload = {"command": "python scripts/measure_estimate.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "machine": {"cpu": _cpu(), "cores": os.cpu_count(), "platform": platform.platform(),
                           "load_average_at_end": os.getloadavg()},
               "tolerance": TOLERANCE, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"saved {args.out}")
    return 0


def _cpu() -> str:
    sys.path.insert(0, str(ROOT / "src"))
    from deltatune.estimate.calibrate import cpu_name

    return cpu_name()


if __name__ == "__main__":
    sys.exit(main())
