"""`deltatune data check FILE`: what a dataset turns into before you train on it.

    deltatune data check data/train.jsonl --model smollm2-135m --max-length 256
    report = check_data("data/train.jsonl", tokenizer, max_length=256)   # the same, as text

The caller supplies the tokenizer (the `data check` command loads it for `--model`), so this
module needs no model code. Prints record and example counts, the detected format, a token-length histogram, how many
examples were truncated or dropped at `max_length`, trained-token totals, and the first
example rendered with the trained (unmasked) tokens wrapped in [[...]] (green on a terminal).
"""

from __future__ import annotations

from types import SimpleNamespace

from deltatune.data.formats import resolve_format
from deltatune.data.sources import load_records
from deltatune.data.labels import IGNORE_INDEX
from deltatune.data.tokenize import build_sft_dataset

GREEN, RESET = "\033[32m", "\033[0m"


def check_data(
    path: str,
    tokenizer,
    fmt: str = "auto",
    max_length: int = 512,
    train_on_prompt: bool = False,
    system_prompt: str | None = None,
    color: bool = False,
) -> str:
    """The report as text, tokenised and masked with `tokenizer`; raises DeltatuneError on bad
    data (same checks as training)."""
    records = load_records(path)
    detected = resolve_format(records, fmt)
    cfg = SimpleNamespace(format=detected, max_length=max_length, train_on_prompt=train_on_prompt,
                          system_prompt=system_prompt, pack=False)
    dataset = build_sft_dataset(records, tokenizer, cfg)
    s = dataset.stats
    lines = [
        f"file:            {path}",
        f"format:          {detected}" + (" (detected)" if fmt == "auto" else ""),
        f"records:         {len(records)}",
        f"examples:        {s['count']} (max_length {max_length})",
        f"truncated:       {s['truncated']}   dropped (no response left): {s['dropped']}",
        f"tokens:          {s['total_tokens']} total, {s['trained_tokens']} trained "
        f"({s['trained_tokens'] / max(s['total_tokens'], 1):.0%})",
        f"length:          min {min(s['lengths'])}, mean {sum(s['lengths']) / len(s['lengths']):.1f}, "
        f"max {max(s['lengths'])}",
        "",
        "token-length histogram:",
        *length_histogram(s["lengths"]),
        "",
        "first example (trained tokens in [[...]]):",
        render_marked(tokenizer, dataset.examples[0], color=color),
    ]
    return "\n".join(lines)


def length_histogram(lengths: list[int], bins: int = 10, width: int = 40) -> list[str]:
    """Text bars: one line per length range with its count."""
    lo, hi = min(lengths), max(lengths)
    step = max(1, -(-(hi - lo + 1) // bins))  # ceil, so `bins` ranges cover lo..hi
    counts = [0] * bins
    for n in lengths:
        counts[min((n - lo) // step, bins - 1)] += 1
    top = max(counts)
    rows = []
    for i, c in enumerate(counts):
        start = lo + i * step
        if start > hi:
            break
        bar = "#" * max(1 if c else 0, round(width * c / top))
        rows.append(f"  {start:>6}-{min(start + step - 1, hi):<6} {bar} {c}")
    return rows


def render_marked(tokenizer, example: dict, color: bool = False) -> str:
    """Decode an example, wrapping each run of trained tokens in [[...]] (or colour)."""
    opened, closed = (GREEN, RESET) if color else ("[[", "]]")
    out, run, run_trained = [], [], None
    for tok, label in zip(example["input_ids"], example["labels"]):
        trained = label != IGNORE_INDEX
        if run and trained != run_trained:
            out.append(_span(tokenizer, run, run_trained, opened, closed))
            run = []
        run.append(tok)
        run_trained = trained
    if run:
        out.append(_span(tokenizer, run, run_trained, opened, closed))
    return "".join(out)


def _span(tokenizer, ids: list[int], trained: bool, opened: str, closed: str) -> str:
    text = tokenizer.decode(ids, skip_special_tokens=False)
    return f"{opened}{text}{closed}" if trained else text
