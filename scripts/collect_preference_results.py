"""Collect the SmolLM2 preference / RL runs' eval.json figures into one results file.

    python scripts/collect_preference_results.py runs/smollm2-rm-lora runs/smollm2-dpo-lora ... \
        --out benchmarks/results/preference_rl_smollm2.json

Keeps, per run: recipe, method, config overrides that matter (preference / rl sections), steps,
train seconds and tokens/s, and the before / after held-out numbers (examples dropped).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml


def _numbers(split: dict | None) -> dict:
    return {k: v for k, v in (split or {}).items() if isinstance(v, (int, float))}


def summarise(run_dir: Path) -> dict:
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    result = json.loads((run_dir / "eval.json").read_text())
    section = {"rm": "preference", "dpo": "preference", "ppo": "rl", "grpo": "rl"}.get(cfg["recipe"])
    return {
        "run": run_dir.name, "recipe": cfg["recipe"], "model": cfg["model"]["name"], "method": cfg["method"],
        "settings": cfg.get(section) if section else None, "train": cfg["train"], "steps": result.get("steps"),
        "resources": result.get("resources"),
        "before": {k: _numbers(v) for k, v in (result.get("before") or {}).items()},
        "after": {k: _numbers(v) for k, v in (result.get("after") or {}).items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.write_text(json.dumps([summarise(r) for r in args.runs], indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
