"""Intrinsic SAID's d90 on the default data: the smallest intrinsic dimension d whose score
reaches 90% of full fine-tuning's at the same budget (Aghajanyan et al. 2021's measure).

    .venv/bin/python scripts/said_d90.py --ds 2000 20000 200000 2000000 \
        --set data.replay=null train.max_steps=50 train.batch_size=8 data.probe=null data.forgetting_prompts=null

Runs `configs/smollm2/sft_full.yaml` once and `sft_said.yaml` once per d (each through
`scripts/measure_methods.py`'s `run_one`: its own process, finished runs reused), all with the
same `--set` overrides and seed. SAID's learning rate is scaled with d as lr(d) = lr0 *
sqrt(d0 / d) (`--lr0` at `--d0`): Adam moves each of the d coordinates by about lr per step and
the projection's columns are near-orthonormal, so the weights move by about lr * sqrt(d) per
step; the scaling keeps that step length fixed across d, so a larger d is not simply a larger
step.

Two scores, both against the base model measured in the same runs:
  - held-out accuracy gain: test `contains` after minus before (points);
  - validation loss drop: val loss before minus after (nats per token).
d90 is the smallest d of the grid whose score is >= 90% of full fine-tuning's; where the grid
brackets it, the log-linear interpolation between the two bracketing d is reported as well.
Writes <out>.json, <out>.md and <out>.svg (score / full's score against d).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure_methods import run_one  # noqa: E402  (the script beside this one)

THRESHOLD = 0.9


def said_lr(d: int, d0: int, lr0: float) -> float:
    """lr(d) = lr0 * sqrt(d0 / d): the same weight-space step length at every d."""
    return lr0 * math.sqrt(d0 / d)


def scores(row: dict) -> dict:
    """The two scores of one run, read from its eval.json."""
    report = json.loads((ROOT / row["run_dir"] / "eval.json").read_text())
    before, after = report.get("before") or {}, report["after"]
    val_before, val_after = (before.get("val") or {}).get("loss"), (after.get("val") or {}).get("loss")
    test_before, test_after = (before.get("test") or {}).get("contains"), (after.get("test") or {}).get("contains")
    return {
        "accuracy_gain": None if test_after is None or test_before is None else 100.0 * (test_after - test_before),
        "val_loss_drop": None if val_after is None or val_before is None else val_before - val_after,
        "val_before": val_before, "val_after": val_after, "test_before": test_before, "test_after": test_after,
    }


def d90(points: list[tuple[int, float]], reference: float) -> dict:
    """The smallest grid d reaching THRESHOLD x reference, and the log-linear crossing point."""
    target = THRESHOLD * reference
    points = sorted(points)
    for i, (d, score) in enumerate(points):
        if score >= target:
            crossing = None
            if i > 0:
                (d_lo, s_lo) = points[i - 1]
                share = (target - s_lo) / (score - s_lo)
                crossing = round(math.exp(math.log(d_lo) + share * (math.log(d) - math.log(d_lo))))
            return {"d90_grid": d, "d90_interpolated": crossing, "reached": True}
    best_d, best = max(points, key=lambda p: p[1])
    return {"d90_grid": None, "d90_interpolated": None, "reached": False,
            "best_d": best_d, "best_share": best / reference if reference else None}


def markdown(result: dict) -> str:
    full = result["full"]
    lines = [f"Overrides on every run: `{' '.join(result['overrides'])}`; SAID lr(d) = "
             f"{result['lr0']:g} x sqrt({result['d0']} / d)", "",
             "| run | d | lr | train time | tokens/s | val loss before -> after | held-out before -> after "
             "| val-loss drop (share of full's) | accuracy gain, pts (share of full's) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in [full, *result["said"]]:
        s = row["scores"]
        share_v = s["val_loss_drop"] / full["scores"]["val_loss_drop"]
        gain_full = full["scores"]["accuracy_gain"]
        share_a = f"{s['accuracy_gain'] / gain_full:.0%}" if gain_full else "-"
        lines.append(
            f"| {row['label']} | {row.get('d') or 'all'} | {row['lr']:g} | {row['train_seconds'] / 60:.1f} min "
            f"| {row['tokens_per_s']:.0f} | {s['val_before']:.3f} -> {s['val_after']:.3f} "
            f"| {100 * s['test_before']:.1f}% -> {100 * s['test_after']:.1f}% "
            f"| {s['val_loss_drop']:.3f} ({share_v:.0%}) | {s['accuracy_gain']:+.1f} ({share_a}) |")
    lines.append("")
    for name, found in result["d90"].items():
        if found["reached"]:
            extra = f" (log-linear crossing ~{found['d90_interpolated']:,})" if found["d90_interpolated"] else ""
            lines.append(f"- d90 by {name}: {found['d90_grid']:,}{extra}")
        else:
            lines.append(f"- d90 by {name}: not reached on this grid (best: d = {found['best_d']:,} at "
                         f"{found['best_share']:.0%} of full fine-tuning's)")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    full = result["full"]["scores"]
    for key, label in (("val_loss_drop", "validation-loss drop"), ("accuracy_gain", "held-out accuracy gain")):
        if not full[key]:
            continue
        ds = [row["d"] for row in result["said"]]
        ax.plot(ds, [row["scores"][key] / full[key] for row in result["said"]], marker="o", label=label)
    ax.axhline(THRESHOLD, color="grey", linestyle="--", linewidth=1, label="90% of full fine-tuning")
    ax.set_xscale("log")
    ax.set_xlabel("intrinsic dimension d")
    ax.set_ylabel("share of full fine-tuning's score")
    ax.set_title("Intrinsic SAID on the default data (SmolLM2-135M)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ds", nargs="+", type=int, required=True, help="the intrinsic dimensions to run")
    parser.add_argument("--set", nargs="*", default=[], dest="overrides", help="k=v overrides for every run")
    parser.add_argument("--d0", type=int, default=2000, help="the d at which SAID uses --lr0 (its YAML's d)")
    parser.add_argument("--lr0", type=float, default=1e-2, help="SAID's lr at --d0 (its YAML's lr)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "said-d90")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "said_d90_smollm2")
    args = parser.parse_args()

    from deltatune.atomic import write_json_atomic, write_text_atomic
    from deltatune.config import load_config

    full = run_one("full", args.overrides, args.seed, args.runs)
    full["lr"] = load_config(ROOT / "configs/smollm2/sft_full.yaml", args.overrides).train.lr
    full["scores"] = scores(full)
    result = {"overrides": args.overrides, "d0": args.d0, "lr0": args.lr0, "threshold": THRESHOLD,
              "full": full, "said": []}
    for d in sorted(args.ds):
        lr = said_lr(d, args.d0, args.lr0)
        row = run_one("said", [*args.overrides, f"method.d={d}", f"train.lr={lr:.3g}"], args.seed, args.runs,
                      label=f"said-d{d}")
        row.update(d=d, lr=float(f"{lr:.3g}"), scores=scores(row))
        result["said"].append(row)
        result["d90"] = {key: d90([(r["d"], r["scores"][key]) for r in result["said"]], full["scores"][key])
                         for key in ("val_loss_drop", "accuracy_gain") if full["scores"][key]}
        # written after every run: an interrupted sweep keeps its numbers
        write_json_atomic(args.out.with_suffix(".json"), result)
        write_text_atomic(args.out.with_suffix(".md"), markdown(result))
    plot(result, args.out.with_suffix(".svg"))
    print(markdown(result))


if __name__ == "__main__":
    main()
