"""How report numbers are written: one place, so the run page and the comparison agree.

    fmt_metric("contains", 0.4375) -> "43.8%"      fmt_count(8192) -> "8,192"
    fmt_bytes(36256) -> "35.4 KiB"                 fmt_change("contains", 0.1, 0.4) -> "+30.0 pts"
"""

from __future__ import annotations

from deltatune.reports.run_files import number

# measures that are shares in [0, 1]: written as percentages, their changes in points
FRACTIONS = {"exact_match", "contains", "sampled_contains", "accuracy", "reward_accuracy", "pairwise_accuracy",
             "mc_accuracy", "majority_rate", "macro_f1", "token_f1", "rouge_l"}


def is_fraction(metric: str) -> bool:
    return metric.rsplit(".", 1)[-1] in FRACTIONS


def fmt_number(value) -> str:
    """Four significant digits; thousands with separators; tiny values in e-notation."""
    value = number(value)
    if value is None:
        return "-"
    if 1000 <= abs(value) < 1e9:
        return f"{value:,.0f}"
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.3g}"
    return f"{value:.4g}"


def fmt_metric(metric: str, value) -> str:
    value = number(value)
    if value is None:
        return "-"
    return f"{100 * value:.1f}%" if is_fraction(metric) else fmt_number(value)


def fmt_change(metric: str, before, after) -> str:
    before, after = number(before), number(after)
    if before is None or after is None:
        return "-"
    if is_fraction(metric):
        return f"{100 * (after - before):+.1f} pts"
    return f"{after - before:+.4g}"


def fmt_count(value) -> str:
    value = number(value)
    return "-" if value is None else f"{int(value):,}"


def fmt_bytes(value) -> str:
    value = number(value)
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return "-"


def fmt_seconds(value) -> str:
    value = number(value)
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min" if value < 7200 else f"{value / 3600:.2f} h"
