"""The noise-floor control of a run's forgetting measures: `deltatune eval RUN --control`.

    floors = run_control("runs/smollm2-sft-lora", seeds=3)

A forgetting number means little without the number a run that learns *nothing* would show:
a small model's probe moves when its weights move at all, whatever they learnt. The control
is the same recipe, the same method, the same number of optimiser steps and the same replay,
trained on the base model's own greedy replies to the run's training prompts (nothing new to
learn: the targets are what the model already says). Whatever the control's measures move is
the floor; the run's figure beside it says how much of the run's forgetting is real.

Each control seed is an ordinary run dir under RUN/control/seed-N (a finished one is reused,
an unfinished one continued), and the table goes to RUN/control/control.json.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from deltatune.atomic import write_json_atomic, write_jsonl_atomic
from deltatune.errors import DeltatuneError
from deltatune.eval.measures import MEASURES, describe, forgetting_measures

CONTROL_DIR = "control"
REPLY_TOKENS = 128  # the base's replies to the training prompts (unfinished ones are dropped)


def run_control(run_dir: str | Path, seeds: int = 1) -> dict:
    """Train the control for `seeds` seeds (reusing finished ones); print and save the floors."""
    from deltatune.config import load_run_config

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    run_report = _read_report(run_dir)
    if cfg.recipe != "sft":
        raise DeltatuneError(f"{run_dir}: --control needs an sft run (this one is recipe {cfg.recipe!r})")
    if not (cfg.data.probe or cfg.data.forgetting_prompts):
        raise DeltatuneError(f"{run_dir}: its config measures no forgetting (set data.probe and/or "
                             f"data.forgetting_prompts), so a control has nothing to compare")
    folder = run_dir / CONTROL_DIR
    train_file = _base_replies_file(cfg, folder)
    per_seed = {}
    for seed in range(cfg.train.seed, cfg.train.seed + seeds):
        per_seed[seed] = forgetting_measures(*_before_after(_control_run(cfg, folder, train_file, seed,
                                                                         run_report["steps"])))
    result = {"run": forgetting_measures(run_report.get("before"), run_report["after"]),
              "control": per_seed, "floor": _floors(per_seed), "steps": run_report["steps"]}
    write_json_atomic(folder / "control.json", result)
    print(control_table(result))
    print(f"wrote {folder / 'control.json'}")
    return result


def _read_report(run_dir: Path) -> dict:
    path = run_dir / "eval.json"
    report = json.loads(path.read_text()) if path.is_file() else {}
    if not report.get("after") or "steps" not in report:
        raise DeltatuneError(f"{run_dir}: no finished training report (eval.json with `after`); "
                             f"finish the run (deltatune train ... --resume) before its control")
    return report


def _base_replies_file(cfg, folder: Path) -> Path:
    """RUN/control/base_replies.jsonl: the base model's replies to the training prompts."""
    path = folder / "base_replies.jsonl"
    if path.is_file():
        return path
    from deltatune.recipes import common
    from deltatune.replay.answers import self_replay_records

    print("control: the base model answers the run's training prompts ...", flush=True)
    model, tokenizer = common.load_for_training(cfg)
    records = self_replay_records(model, tokenizer, cfg.data.train, cfg.data.system_prompt, REPLY_TOKENS,
                                  cfg.eval.batch_size)
    write_jsonl_atomic(path, records)
    return path


def _control_run(cfg, folder: Path, train_file: Path, seed: int, steps: int) -> Path:
    """The control run dir for one seed (trained now unless finished before)."""
    from deltatune.recipes import sft
    from deltatune.training.rundir import is_finished

    out = folder / f"seed-{seed}"
    if is_finished(out) and (out / "eval.json").is_file():
        print(f"control seed {seed}: reusing {out}")
        return out
    data = cfg.data.model_copy(update={"train": str(train_file), "val": None, "test": None, "format": "messages"})
    train = cfg.train.model_copy(update={"seed": seed, "max_steps": steps})
    control = cfg.model_copy(update={"data": data, "train": train,
                                     "output": cfg.output.model_copy(update={"dir": str(out)}),
                                     "eval": cfg.eval.model_copy(update={"before_after": True})})
    print(f"control seed {seed}: {steps} steps on the base model's own replies -> {out}", flush=True)
    return sft.run(control, resume=out.is_dir())


def _before_after(run_dir: Path) -> tuple[dict | None, dict]:
    report = json.loads((run_dir / "eval.json").read_text())
    return report.get("before"), report["after"]


def _floors(per_seed: dict) -> dict:
    """{measure: {"mean", "spread" (max - min), "worst"}} over the control seeds."""
    floors = {}
    for name in MEASURES:
        values = [m[name] for m in per_seed.values() if name in m]
        if values:
            worst = min(values) if name.startswith("probe") else max(values)
            floors[name] = {"mean": round(statistics.fmean(values), 4), "spread": round(max(values) - min(values), 4),
                            "worst": worst, "n": len(values)}
    return floors


def control_table(result: dict) -> str:
    """measure | run | control floor (mean, worst of the seeds)."""
    rows = [("measure", "run", "control mean", "control worst", "seeds")]
    for name in MEASURES:
        floor, run = result["floor"].get(name), result["run"].get(name)
        if floor is None and run is None:
            continue
        rows.append((name, describe(name, run) if run is not None else "-",
                     describe(name, floor["mean"]) if floor else "-",
                     describe(name, floor["worst"]) if floor else "-", str(floor["n"]) if floor else "0"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
