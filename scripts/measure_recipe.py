"""Measure the default recipe on several data families and sizes: the README's table.

    .venv/bin/python scripts/measure_recipe.py --data school-24 clinic-60 orgfacts --seeds 0 [--control]

Each item is `deltatune train configs/smollm2/sft_lora.yaml` with only data.train / data.val /
data.test pointed at a built-in family (`builtin:<name>/{train,val,test}`; `orgfacts` is the
demo's own data), one run per seed under runs/measure/<name>-seed<S> (a finished run is
reused, an unfinished one continued). `--control` also trains each run's noise-floor control
(`deltatune eval RUN --control`, one seed: the run's). Writes benchmarks/results/
recipe_families.json and .md (the default --out): family, size, steps, wall time, held-out accuracy before ->
after, the three forgetting measures, and the control's floor; means over the seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "smollm2" / "sft_lora.yaml"
OUT = ROOT / "benchmarks" / "results" / "recipe_families"


def run_one(name: str, seed: int, runs: Path) -> dict:
    from deltatune.config import load_config
    from deltatune.recipes import sft
    from deltatune.training.rundir import is_finished

    out = runs / f"{name}-seed{seed}"
    timing = out / "wall_seconds.json"
    if not (is_finished(out) and timing.is_file()):
        overrides = [f"data.{split}=builtin:{name}/{split}" for split in ("train", "val", "test")]
        overrides += [f"train.seed={seed}", f"output.dir={out}"]
        started = time.perf_counter()
        sft.run(load_config(RECIPE, overrides), resume=out.is_dir())
        timing.write_text(json.dumps({"seconds": round(time.perf_counter() - started, 1)}))
    report = json.loads((out / "eval.json").read_text())
    before, after = report["before"] or {}, report["after"]
    return {"data": name, "seed": seed, "run_dir": str(out), "steps": report["steps"],
            "wall_seconds": json.loads(timing.read_text())["seconds"],
            "replay_examples": (report["data"].get("replay") or {}).get("examples"),
            "replay_weight": (report["data"].get("replay") or {}).get("weight"),
            "heldout_before": (before.get("test") or {}).get("contains"),
            "heldout_after": after["test"]["contains"], "val_before": (before.get("val") or {}).get("loss"),
            "val_after": after["val"]["loss"], "learned": report["learning"]["learned"],
            **report["forgetting"]}


def control_of(row: dict) -> dict:
    from deltatune.eval.control import run_control

    result = run_control(row["run_dir"], seeds=1)
    return {name: floor["mean"] for name, floor in result["floor"].items()}


def summarise(rows: list[dict]) -> list[dict]:
    """One line per data item: means (and spread over seeds) of every number."""
    out = []
    for name in dict.fromkeys(r["data"] for r in rows):
        mine = [r for r in rows if r["data"] == name]
        line = {"data": name, "seeds": len(mine)}
        for key in ("steps", "wall_seconds", "heldout_before", "heldout_after", "probe_greedy_change",
                    "probe_sampled_change", "kl", "nll_increase"):
            values = [r[key] for r in mine if isinstance(r.get(key), (int, float))]
            if values:
                line[key] = statistics.fmean(values)
                line[key + "_spread"] = max(values) - min(values)
        floors = [r["control"] for r in mine if r.get("control")]
        for key in ("probe_greedy_change", "probe_sampled_change", "kl"):
            values = [f[key] for f in floors if key in f]
            if values:
                line["control_" + key] = statistics.fmean(values)
        out.append(line)
    return out


def markdown(summary: list[dict]) -> str:
    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}%"

    def pts(v):
        return "-" if v is None else f"{v:+.1f}"

    head = ("| data | seeds | steps | wall | held-out before -> after | probe greedy (pts) | probe sampled (pts) "
            "| KL from base | control: greedy / sampled / KL |\n|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for s in summary:
        control = " / ".join([pts(s.get("control_probe_greedy_change")), pts(s.get("control_probe_sampled_change")),
                              "-" if s.get("control_kl") is None else f"{s['control_kl']:.4f}"])
        lines.append(f"| {s['data']} | {s['seeds']} | {s.get('steps', 0):.0f} | {s.get('wall_seconds', 0) / 60:.1f} min "
                     f"| {pct(s.get('heldout_before'))} -> {pct(s.get('heldout_after'))} "
                     f"| {pts(s.get('probe_greedy_change'))} | {pts(s.get('probe_sampled_change'))} "
                     f"| {'-' if s.get('kl') is None else format(s['kl'], '.4f')} | {control} |")
    return head + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", required=True, help="built-in names: orgfacts, school-24, clinic-60, ...")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--control", action="store_true", help="also train each run's noise-floor control")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "measure")
    parser.add_argument("--out", type=Path, default=OUT, help="stem of the .json / .md results")
    args = parser.parse_args()

    from deltatune.atomic import write_json_atomic, write_text_atomic

    rows = []
    for name in args.data:
        for seed in args.seeds:
            row = run_one(name, seed, args.runs)
            if args.control:
                row["control"] = control_of(row)
            rows.append(row)
            summary = summarise(rows)  # written after every run: an interrupted sweep keeps its numbers
            write_json_atomic(args.out.with_suffix(".json"), {"rows": rows, "summary": summary})
            write_text_atomic(args.out.with_suffix(".md"), markdown(summary))
    print(markdown(summarise(rows)))


if __name__ == "__main__":
    main()
