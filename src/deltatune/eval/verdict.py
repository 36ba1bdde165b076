"""Did the run learn? A verdict from the before/after numbers, printed and kept in eval.json.

    learning = learning_verdict(before, after, validation_note, get_method(cfg.method).capacity_hint)
    learning["learned"], learning["warnings"], learning["advice"]
    print_verdict(learning)

A run that trains without error can still have learnt nothing (too few steps for a small set,
a learning rate far too low, replay outweighing the data). Two held-out signals decide:
- the validation loss must fall by at least MIN_VAL_DROP (relative) from the base model's;
- on QA data (a `test` split), held-out answer accuracy must rise at least MIN_ACC_GAIN above
  the base's.
Either failing prints a warning with what to try. No held-out split at all is a warning too:
nothing says whether the run learnt.
"""

from __future__ import annotations

from deltatune.training.progress import say

MIN_VAL_DROP = 0.05  # validation loss must fall >= 5% relative to the base model's
MIN_ACC_GAIN = 0.05  # held-out accuracy must gain >= 5 points over the base model's

STEPS_ADVICE = "more steps (train.epochs=N or train.max_steps=N)"
LR_ADVICE = "a higher learning rate (train.lr)"
REPLAY_ADVICE = "less replay (data.replay_ratio / replay_weight)"


def advice(capacity_hint: str = "") -> list[str]:
    """What to try after a run that did not learn; `capacity_hint` is the method's own (its
    registry row's `capacity_hint`: a LoRA's rank, SAID's d, a prompt's virtual tokens)."""
    return [STEPS_ADVICE, LR_ADVICE, *([capacity_hint] if capacity_hint else []), REPLAY_ADVICE]


def learning_verdict(before: dict | None, after: dict, validation: dict | None = None,
                     capacity_hint: str = "") -> dict:
    """{"learned": True/False/None (nothing to judge by), "checks": {...}, "warnings", "advice"}."""
    before = before or {}
    checks, warnings = {}, []
    b_val, a_val = _metric(before, "val", "loss"), _metric(after, "val", "loss")
    if a_val is not None and b_val is not None:
        drop = (b_val - a_val) / b_val if b_val > 0 else 0.0
        ok = drop >= MIN_VAL_DROP
        checks["val_loss"] = {"before": b_val, "after": a_val, "relative_drop": round(drop, 4), "ok": ok}
        if not ok:
            warnings.append(f"validation loss fell only {100 * drop:.1f}% ({b_val:.3f} -> {a_val:.3f}; "
                            f"at least {100 * MIN_VAL_DROP:.0f}% is expected)")
    b_acc, a_acc = _metric(before, "test", "contains"), _metric(after, "test", "contains")
    if a_acc is not None and b_acc is not None:
        gain = a_acc - b_acc
        ok = gain >= MIN_ACC_GAIN
        checks["test_accuracy"] = {"before": b_acc, "after": a_acc, "gain": round(gain, 4), "ok": ok}
        if not ok:
            warnings.append(f"held-out accuracy stayed at the base model's level ({100 * b_acc:.1f}% -> "
                            f"{100 * a_acc:.1f}%)")
    if validation and validation.get("warning"):
        warnings.append(validation["warning"])
    if not checks:
        warnings.append("nothing held out was measured (no data.val / val split and no data.test, or "
                        "eval.before_after is off): no evidence either way that the run learnt")
        learned = None
    else:
        learned = all(c["ok"] for c in checks.values())
    return {"learned": learned, "checks": checks, "warnings": warnings,
            "advice": advice(capacity_hint) if learned is False else []}


def print_verdict(learning: dict) -> None:
    """One line when the run learnt; the warnings and what to try when it did not."""
    if learning["learned"]:
        say("learned: held-out " + ", ".join(_describe(name, c) for name, c in learning["checks"].items()))
        for warning in learning["warnings"]:
            say(f"note: {warning}")
        return
    head = "WARNING: the run did not learn" if learning["learned"] is False else "WARNING: cannot tell whether the run learned"
    say(head + ":")
    for warning in learning["warnings"]:
        say(f"  - {warning}")
    if learning["advice"]:
        say("  try: " + "; ".join(learning["advice"]))


def _describe(name: str, check: dict) -> str:
    if name == "val_loss":
        return f"val loss {check['before']:.3f} -> {check['after']:.3f}"
    return f"accuracy {100 * check['before']:.1f}% -> {100 * check['after']:.1f}%"


def _metric(results: dict, split: str, metric: str) -> float | None:
    value = (results.get(split) or {}).get(metric)
    return float(value) if isinstance(value, (int, float)) else None
