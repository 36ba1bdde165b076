"""deltatune.compare: several methods on the same data, budget and seeds, side by side.

    deltatune compare configs/smollm2/sft_lora.yaml --methods lora,ia3,bitfit,full --seeds 3 \
        --out runs/cmp train.max_steps=50
    summary = compare(config, "lora,ia3", seeds=1, out="runs/cmp")     # from Python

Modules: `plan` (one validated config per method and seed; where each method's settings come
from), `runner` (train them one after another through the normal recipe entry; resumable; a
crash marks that run failed), `summary` (each run's numbers read from its own files; mean ± std
over seeds), `report` (OUT/report.md, report.json, report.html with the charts), `cli`.
"""

from __future__ import annotations

from pathlib import Path


def compare(config: str, methods: str, seeds: int = 1, out: str | None = None, overrides: list[str] | None = None,
            per_method: list[str] | None = None, method_configs: str | None = None, train_run=None,
            on_progress=print, isolate: bool = True) -> dict:
    """Plan (every config checked first), train or reuse each run, write the three reports;
    returns the summary (report.json's content). Ctrl-C writes the reports so far, then stops.
    `isolate`: each run in its own `deltatune train` process (its peak memory its own); False
    trains them all in this one (`--in-process`). `train_run` replaces both (tests)."""
    from deltatune.compare.plan import make_plan
    from deltatune.compare.runner import Outcome, load_state, run_plan, train_in_subprocess, train_one

    plan = make_plan(config, methods, seeds, out, overrides, per_method, method_configs)
    plan.isolated = isolate and train_run is None
    train_run = train_run or (train_in_subprocess if isolate else train_one)
    on_progress(f"compare: {len(plan.methods)} methods x {len(plan.seeds)} seed(s) = {len(plan.runs)} runs "
                f"-> {plan.out}")
    for method, settings in plan.settings.items():
        lr = next(r.cfg.train.lr for r in plan.runs if r.method == method)
        on_progress(f"  {method}: train.lr {lr:g}, method settings from {settings.source}")
    try:
        outcomes = run_plan(plan, train_run=train_run, on_progress=on_progress)
    except KeyboardInterrupt:
        saved = load_state(plan.out)
        _write_reports(plan, {r.name: saved.get(r.name, Outcome("pending")) for r in plan.runs}, on_progress)
        raise
    return _write_reports(plan, outcomes, on_progress)


def _write_reports(plan, outcomes: dict, on_progress) -> dict:
    from deltatune.compare.report import markdown, write_reports
    from deltatune.compare.summary import summarise

    summary = summarise(plan, outcomes)
    paths = write_reports(Path(plan.out), summary)
    on_progress(markdown(summary).split("\n## Per-method")[0])  # the methods table, as in report.md
    on_progress("wrote " + ", ".join(str(p) for p in paths.values()))
    return summary


__all__ = ["compare"]
