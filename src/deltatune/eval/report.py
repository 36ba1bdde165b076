"""Present evaluation results: the before/after table, `eval.json`, the loss-curve plot.

    print(comparison_table(before, after))          # rows split/metric; base, tuned, delta
    write_eval_json(run_dir / "eval.json", eval_payload(after, before, target=str(run_dir)))
    plot_loss_curve(run_dir / "metrics.jsonl", run_dir / "loss.png")

`before` / `after` are what `deltatune.eval.runner.evaluate` returns: {split: {metric: value}}.
Accuracies and overlaps (exact_match, contains, token_f1, rouge_l, mc_accuracy, ...) print as
percentages and their delta in points; BLEU and chrF (0-100), loss and perplexity print as
numbers, and for loss and perplexity a negative delta is the improvement.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from deltatune.atomic import write_json_atomic

# fractions in [0, 1], shown as % (deltas in points); BLEU / chrF are on sacrebleu's 0-100 scale
PERCENT_METRICS = ("exact_match", "contains", "sampled_contains", "token_f1", "rouge_l", "mc_accuracy",
                   "mc_accuracy_norm", "accuracy", "macro_f1", "majority_rate")  # the last three: recipe: cls
NUMBER_METRICS = ("bleu", "chrf", "loss", "perplexity", "kl", "nll_increase")
SHOWN = PERCENT_METRICS + NUMBER_METRICS  # in this order within a split


def _fmt(metric: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if metric in PERCENT_METRICS:
        return f"{100 * value:.1f}%"
    if metric in ("kl", "nll_increase"):
        return f"{value:.4f}"
    return f"{value:.3f}" if metric == "loss" else f"{value:.2f}"


def _fmt_delta(metric: str, before: float | None, after: float | None) -> str:
    if before is None or after is None:
        return "-"
    if metric in PERCENT_METRICS:
        return f"{100 * (after - before):+.1f} pts"
    if metric in ("kl", "nll_increase"):
        return f"{after - before:+.4f}"
    return f"{after - before:+.3f}" if metric == "loss" else f"{after - before:+.2f}"


def comparison_rows(before: dict | None, after: dict) -> list[tuple[str, str, str, str]]:
    """(split/metric, base, tuned, delta) cells, one row per shown metric present."""
    before = before or {}
    rows = []
    for split in list(after) + [s for s in before if s not in after]:
        a_split, b_split = after.get(split) or {}, before.get(split) or {}
        for metric in SHOWN:
            if metric not in a_split and metric not in b_split:
                continue
            a, b = a_split.get(metric), b_split.get(metric)
            n = a_split.get("n") or b_split.get("n")
            k = a_split.get("samples") or b_split.get("samples")
            count = f"{n}x{k}" if metric == "sampled_contains" and k else n
            label = f"{split}/{metric}" + (f" (n={count})" if n and metric in PERCENT_METRICS else "")
            rows.append((label, _fmt(metric, b), _fmt(metric, a), _fmt_delta(metric, b, a)))
    return rows


def comparison_table(before: dict | None, after: dict, tuned_label: str = "tuned") -> str:
    """Aligned plain-text table: metric, base, tuned, delta; just metric + value without `before`."""
    headers = ("metric", "base", tuned_label, "delta")
    rows = [headers] + comparison_rows(before, after)
    if before is None:
        rows = [(row[0], row[2]) for row in rows]
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    lines = []
    for i, row in enumerate(rows):
        # first column left-aligned (labels), numbers right-aligned so decimals line up
        cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def eval_payload(after: dict, before: dict | None = None, **info) -> dict:
    """The eval.json document: `info` (target, base_model, eval_cfg, ...) + before/after.

    Pydantic configs among `info` are dumped to plain dicts. Shared by `deltatune eval` and the
    training recipes so both write the same shape."""
    meta = {k: (v.model_dump(mode="json") if hasattr(v, "model_dump") else v) for k, v in info.items()}
    return {**meta, "before": before, "after": after}


def write_eval_json(path: str | Path, metrics: dict) -> Path:
    """Write `metrics` as indented JSON via a temp file + rename, so readers never see half
    (values JSON cannot encode are written as their str())."""
    return write_json_atomic(path, metrics, indent=2, default=str)


def read_loss_points(metrics_jsonl: str | Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(train, val) lists of (step, loss) from a run's metrics.jsonl.

    Rows carry `event` (deltatune.training.metrics): "train" rows give `loss`, "val" rows give
    `val_loss`; other events (nan_stop, end, ...) are not plotted. A row without `event`
    counts as validation when it has `val_loss`/`eval_loss`, else as training when it has
    `loss`. Non-finite values and lines that are not JSON objects are skipped."""
    train, val = [], []
    for line in Path(metrics_jsonl).read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a partly written last line of a live run
        if not isinstance(row, dict) or "step" not in row:
            continue
        event = row.get("event")
        val_value = row.get("val_loss", row.get("eval_loss"))
        if event in ("val", "eval", "validation") or (event is None and val_value is not None):
            point, target = val_value if val_value is not None else row.get("loss"), val
        elif event in ("train", None):
            point, target = row.get("loss"), train
        else:
            continue
        try:
            value = float(point)
        except (TypeError, ValueError):
            continue
        if math.isfinite(value):
            target.append((int(row["step"]), value))
    return train, val


def plot_loss_curve(metrics_jsonl: str | Path, out_png: str | Path, title: str | None = None) -> Path:
    """Train loss (line) and validation loss (markers) against optimiser step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers / CI
    import matplotlib.pyplot as plt

    train, val = read_loss_points(metrics_jsonl)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    try:
        if train:
            ax.plot(*zip(*train), label="train loss", linewidth=1.2)
        if val:
            ax.plot(*zip(*val), "o-", label="val loss", markersize=4)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(title or Path(metrics_jsonl).parent.name)
        ax.grid(alpha=0.3)
        if train or val:
            ax.legend()
        out_png = Path(out_png)
        out_png.parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(out_png)
    finally:
        plt.close(fig)
    return out_png
