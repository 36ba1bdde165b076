"""The three forgetting measures of a run, from its before/after numbers.

    measures = forgetting_measures(before, after)
    measures["probe_greedy_change"], measures["probe_sampled_change"], measures["kl"]

- `probe_greedy_change`: change of the robust general probe's greedy accuracy, in points
  (negative: forgotten);
- `probe_sampled_change`: the same over the seeded sampled replies (`eval.probe_samples`);
- `kl` / `nll_increase`: the mean per-token KL of the tuned model from the base on the base's
  own replies to held-out general prompts, and how much less likely those replies became
  (`data.forgetting_prompts`, deltatune.eval.forgetting).
A measure the run's config does not ask for is absent. `deltatune eval RUN --control` sets
these beside the same measures of a control run (deltatune.eval.control).
"""

from __future__ import annotations

MEASURES = ("probe_greedy_change", "probe_sampled_change", "kl", "nll_increase")


def forgetting_measures(before: dict | None, after: dict) -> dict:
    """{measure: value} for the measures both sides allow (points for the probe changes)."""
    before, out = before or {}, {}
    b_probe, a_probe = before.get("probe") or {}, after.get("probe") or {}
    for key, name in (("contains", "probe_greedy_change"), ("sampled_contains", "probe_sampled_change")):
        if isinstance(a_probe.get(key), (int, float)) and isinstance(b_probe.get(key), (int, float)):
            out[name] = round(100 * (a_probe[key] - b_probe[key]), 2)
    drift = after.get("forgetting") or {}
    for key in ("kl", "nll_increase"):
        if isinstance(drift.get(key), (int, float)):
            out[key] = drift[key]
    return out


def describe(name: str, value: float) -> str:
    """A measure as people read it: points for probe changes, 4 decimals for KL / NLL."""
    return f"{value:+.1f} pts" if name.startswith("probe") else f"{value:.4f}"
