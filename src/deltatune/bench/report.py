"""The bench's result: one dict (what --json prints), its Markdown page, and the two files.

    result = assemble(spec, steps, runs, peaks, command)   # from runner.run_bench
    json_path, md_path = write(result, Path("benchmarks/results"))   # bench_<workload>.json / .md

`result["baselines"][name]` holds, per baseline, `tokens_per_s_ratio` and `peak_memory_ratio`
(deltatune / baseline: a speed ratio > 1 and a memory ratio < 1 mean deltatune is ahead),
`training_memory_ratio` (the same for the growth over setup during the steps), and
`step1_loss_abs_diff` / `max_loss_abs_diff` over the per-step losses. tokens/s counts the
non-padding tokens of the timed steps (after `warmup`) over their summed step time.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
from importlib import metadata
from pathlib import Path

from deltatune.atomic import write_text_atomic
from deltatune.bench import flops
from deltatune.bench.workloads import BenchSpec, step_tokens

SIDE_TITLES = {"deltatune": "deltatune", "hf_loop": "transformers + peft loop", "trl": "TRL"}


def assemble(spec: BenchSpec, steps: list[list[dict]], runs: dict, peaks: list[dict], command: str) -> dict:
    workload = spec.spec
    counted = [step_tokens(examples, workload.objective) for examples in steps]
    tokens = [t for t, _ in counted]
    info = runs["deltatune"].info
    step_flops = [flops.step_flops(workload, info["counts"], info["adapter_params"], t, l) for t, l in counted]
    peak = max(peaks, key=lambda p: p["gflops"])
    sides = {name: _side(run, spec, tokens, step_flops, peak["gflops"]) for name, run in runs.items()}
    baselines = {name: _compare(sides["deltatune"], side) for name, side in sides.items() if name != "deltatune"}
    return {
        "workload": spec.workload, "summary": workload.summary, "command": command,
        "model": spec.model, "steps": spec.steps, "warmup": spec.warmup, "batch_size": spec.batch_size,
        "threads": spec.threads, "seed": spec.seed, "max_length": spec.max_length, "lr": spec.learning_rate,
        "deltatune_opts": list(spec.deltatune_opts), "machine": _machine(), "date": _dt.date.today().isoformat(),
        "matmul_peak": {"gflops": peak["gflops"], "runs": peaks},
        "flops": {"formula": flops.formula_for(workload), "counts": info["counts"],
                  "adapter_params": info["adapter_params"], "per_step": step_flops,
                  "note": "attention scores, norms and the optimiser are not counted (MFU is a lower bound)"},
        "tokens_per_step": tokens, "labelled_per_step": [l for _, l in counted],
        "sides": sides, "baselines": baselines, "notes": _notes(sides),
    }


def _side(run, spec: BenchSpec, tokens: list[int], step_flops: list[float], peak_gflops: float) -> dict:
    if not run.live:
        return {"available": False, "reason": run.failure}
    timed = slice(spec.warmup, None)
    seconds = sum(run.seconds[timed])
    tokens_per_s = sum(tokens[timed]) / seconds
    return {
        "available": True, "tokens_per_s": round(tokens_per_s, 2),
        "median_step_s": round(statistics.median(run.seconds[timed]), 5),
        "step_seconds": [round(s, 5) for s in run.seconds], "losses": run.losses, "memory": run.memory,
        "mfu": round(sum(step_flops[timed]) / seconds / (peak_gflops * 1e9), 4),
        "trainable_params": run.info.get("trainable_params"), "settings": run.info.get("settings", {}),
    }


def _ratio(a, b) -> float | None:
    return round(a / b, 4) if a is not None and b else None


def _compare(ours: dict, base: dict) -> dict:
    if not base["available"]:
        return {"available": False, "reason": base["reason"]}
    diffs = [abs(a - b) for a, b in zip(ours["losses"], base["losses"]) if a is not None and b is not None]
    mem, base_mem = ours["memory"] or {}, base["memory"] or {}
    return {
        "available": True,
        "tokens_per_s_ratio": _ratio(ours["tokens_per_s"], base["tokens_per_s"]),
        "peak_memory_ratio": _ratio(mem.get("whole_peak_mib"), base_mem.get("whole_peak_mib")),
        "training_memory_ratio": _ratio(mem.get("training_growth_mib"), base_mem.get("training_growth_mib")),
        "step1_loss_abs_diff": diffs[0] if diffs else None,
        "max_loss_abs_diff": max(diffs) if diffs else None,
    }


def _notes(sides: dict) -> list[str]:
    notes = []
    if any(side["available"] and side["memory"] is None for side in sides.values()):
        notes.append("memory not measured: the sides ran on threads of one process (--inline)")
    counts = {name: side["trainable_params"] for name, side in sides.items() if side["available"]}
    if len(set(counts.values())) > 1:
        notes.append(f"trainable parameter counts differ between sides: {counts}")
    trl = sides.get("trl", {})
    if trl.get("available") and trl["settings"].get("trainable_dtype") not in (None, "float32"):
        notes.append(f"TRL trains its adapter in {trl['settings']['trainable_dtype']} (it casts the adapter of a "
                     f"quantised model to bf16, as the QLoRA paper does); the other sides train fp32")
    return notes


def _machine() -> dict:
    versions = {}
    for package in ("torch", "transformers", "peft", "trl", "bitsandbytes"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"processor": platform.processor() or platform.machine(), "system": platform.system(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "versions": versions}


# ---------------------------------------------------------------------------------------------
# Markdown


def markdown(result: dict) -> str:
    lines = [f"# deltatune bench: {result['workload']}", "",
             f"{result['summary']}. Model `{result['model']}`; {result['steps']} timed steps after "
             f"{result['warmup']} warm-up, batch {result['batch_size']}, {result['threads']} thread(s), seed "
             f"{result['seed']}, lr {result['lr']:g}; {result['date']}, {result['machine']['processor']}.", "",
             f"    {result['command']}", "", _side_table(result), "", _memory_note(), "",
             _peak_line(result), "", "## Loss per step", "", _loss_table(result), "", "## Settings", ""]
    for name, side in result["sides"].items():
        detail = side.get("settings") if side["available"] else {"unavailable": side["reason"]}
        lines.append(f"- **{SIDE_TITLES[name]}**: " + "; ".join(f"{k}: {_short(v)}" for k, v in detail.items()))
    lines += [f"- versions: " + ", ".join(f"{k} {v}" for k, v in result["machine"]["versions"].items() if v)]
    if result["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def _side_table(result: dict) -> str:
    rows = ["| side | tokens/s | deltatune ÷ side (speed) | median step s | whole peak MiB | training growth MiB "
            "| deltatune ÷ side (peak / growth) | MFU |", "|---|---|---|---|---|---|---|---|"]
    for name, side in result["sides"].items():
        if not side["available"]:
            rows.append(f"| {SIDE_TITLES[name]} | unavailable: {side['reason'][:120]} | | | | | | |")
            continue
        mem = side["memory"] or {}
        cmp = result["baselines"].get(name, {})
        speed = _fmt(cmp.get("tokens_per_s_ratio"), "x") if name != "deltatune" else "-"
        memory = (f"{_fmt(cmp.get('peak_memory_ratio'), 'x')} / {_fmt(cmp.get('training_memory_ratio'), 'x')}"
                  if name != "deltatune" else "-")
        rows.append(f"| {SIDE_TITLES[name]} | {side['tokens_per_s']:.1f} | {speed} | {side['median_step_s']:.4f} | "
                    f"{_fmt(mem.get('whole_peak_mib'), digits=1)} | {_fmt(mem.get('training_growth_mib'), digits=1)} | "
                    f"{memory} | "
                    f"{100 * side['mfu']:.1f}% |")
    return "\n".join(rows)


def _memory_note() -> str:
    return ("Whole peak: the side's own process, loading included (VmHWM). Training growth: the peak during the "
            "steps over the resident memory after setup (model, method, optimiser built).")


def _peak_line(result: dict) -> str:
    peak = result["matmul_peak"]
    shapes = "; ".join(
        ", ".join(f"{n}^3 {g} GFLOP/s" for n, g in run["square"].items())
        + (f", model shape {run['model_shape']['mkn']} {run['model_shape']['gflops']} GFLOP/s"
           if run.get("model_shape") else "") for run in peak["runs"])
    f = result["flops"]
    return (f"MFU = model FLOPs / step time / fp32 matmul peak. Peak {peak['gflops']} GFLOP/s (best square matmul, "
            f"before / after the steps: {shapes}). Model FLOPs per step: `{f['formula']}` with N_body = "
            f"{f['counts']['body']:,}, N_head = {f['counts']['head']:,}, N_adapter = {f['adapter_params']:,}, "
            f"T = tokens, L = labelled positions; {f['note']}.")


def _loss_table(result: dict) -> str:
    names = [n for n, s in result["sides"].items() if s["available"]]
    head = "| step | tokens | " + " | ".join(SIDE_TITLES[n] for n in names) + " | max abs diff |"
    rows = [head, "|" + "---|" * (len(names) + 3)]
    for i, tokens in enumerate(result["tokens_per_step"]):
        values = [result["sides"][n]["losses"][i] for n in names]
        present = [v for v in values if v is not None]
        diff = max(present) - min(present) if len(present) > 1 else None
        warm = " (warm-up)" if i < result["warmup"] else ""
        rows.append(f"| {i + 1}{warm} | {tokens} | " + " | ".join(_fmt(v, digits=6) for v in values)
                    + f" | {_fmt(diff, digits=2, sci=True)} |")
    return "\n".join(rows)


def _fmt(value, suffix: str = "", digits: int = 3, sci: bool = False) -> str:
    if value is None:
        return "n/a"
    return (f"{value:.{digits}e}" if sci else f"{value:.{digits}f}") + suffix


def _short(value) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return text if len(text) <= 200 else text[:197] + "..."


def write(result: dict, out_dir: Path) -> tuple[Path, Path]:
    """bench_<workload>.json and .md under `out_dir` (written atomically)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"bench_{result['workload']}.json", out_dir / f"bench_{result['workload']}.md"
    write_text_atomic(json_path, json.dumps(result, indent=2) + "\n")
    write_text_atomic(md_path, markdown(result))
    return json_path, md_path
