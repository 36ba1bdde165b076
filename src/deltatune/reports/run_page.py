"""One run's report page, `RUN_DIR/report.html`: what the run did, in one self-contained file.

    deltatune report runs/smollm2-sft-lora        # (re)write it; `train` writes it at the end
    write_run_page(run_dir) -> RUN_DIR/report.html

Sections, each left out when the run dir has nothing for it (every recipe's run dir renders:
sft, pt, rm, dpo, ppo, grpo, and an interrupted run): headline numbers (steps, trainable
parameters, peak memory, tokens/s, time, final validation loss, adapter size); loss, learning-rate
and throughput curves from metrics.jsonl (train and validation; the RL recipes' reward and KL);
every numeric eval measure before vs after; the learning verdict; the three forgetting measures;
sample generations (base and tuned reply side by side); the method's own report; the budget and
resources records; the resolved config. Every number is read from the run's own files.
"""

from __future__ import annotations

import json
from pathlib import Path

from deltatune.atomic import write_text_atomic
from deltatune.reports import html as h
from deltatune.reports.fmt import fmt_bytes, fmt_change, fmt_count, fmt_metric, fmt_number, fmt_seconds
from deltatune.reports.plots import Series, line_chart
from deltatune.reports.run_files import (RunFiles, adapter_bytes, number, peak_memory_mib, read_run, series,
                                         split_metrics, train_wall_seconds)

PAGE = "report.html"
MAX_EXAMPLES = 25  # sample generations shown per split (eval.json keeps them all)
FORGETTING_LABELS = {"probe_greedy_change": "probe, greedy answers contain the key (change, points)",
                     "probe_sampled_change": "probe, sampled answers contain the key (change, points)",
                     "kl": "KL from the base on its own replies (nats/token)",
                     "nll_increase": "NLL increase of the base's replies (nats/token)"}
RL_CURVES = (("reward_mean", "Mean reward"), ("kl", "KL to the reference"), ("entropy", "Entropy"),
             ("value_loss", "Value loss"), ("response_length", "Reply length (tokens)"))


def write_run_page(run_dir: str | Path) -> Path:
    """Write RUN_DIR/report.html (atomically) and return its path."""
    run = read_run(run_dir)
    path = run.run_dir / PAGE
    write_text_atomic(path, render(run))
    return path


def render(run: RunFiles) -> str:
    recipe = run.section("recipe") or "?"
    method = run.section("method", "name") or "?"
    model = run.section("model", "name") or "?"
    status = "finished" if run.finished else "not finished (no tuned-model numbers in eval.json yet)"
    blocks = [summary_section(run), curves_section(run), eval_section(run), learning_section(run),
              forgetting_section(run), examples_section(run), method_report_section(run),
              records_section(run), config_section(run)]
    if run.problems:
        blocks.append(h.section("Could not read", *[h.note(p, "bad") for p in run.problems]))
    return h.page(f"deltatune run: {run.run_dir.name}", blocks,
                  subtitle=f"recipe {recipe} · method {method} · model {model} · {status} · {run.run_dir}")


# ---------------------------------------------------------------------------------------------
# headline numbers


def headline(run: RunFiles) -> list[tuple[str, str]]:
    """(label, value) of the numbers a user looks at first; those the run lacks are left out."""
    ev, items = run.eval, []
    end = (run.rows("end") or [{}])[-1]
    steps = ev.get("steps", end.get("step"))
    if number(steps) is not None:
        items.append(("optimiser steps" if run.rows("train") else "steps", fmt_count(steps)))
    if ev.get("stop_reason"):
        items.append(("stopped", str(ev["stop_reason"])))
    params = ev.get("parameters") or {}
    trainable, total = number(params.get("trainable")), number(params.get("total"))
    if trainable is not None:
        share = f" ({100 * trainable / total:.3g}%)" if total else ""
        items.append(("trainable parameters", f"{fmt_count(trainable)}{share}"))
    resources = ev.get("resources") or {k: end.get(k) for k in ("peak_rss_mib", "train_peak_rss_mib", "tokens_per_s",
                                                                "train_seconds", "train_tokens")}
    memory, what = peak_memory_mib(resources)
    if memory is not None:
        items.append((what, f"{memory:,.0f} MiB"))
    if number(resources.get("tokens_per_s")) is not None:
        items.append(("tokens/s (optimiser steps)", fmt_number(resources["tokens_per_s"])))
    if number(resources.get("train_seconds")) is not None:
        items.append(("time in optimiser steps", fmt_seconds(resources["train_seconds"])))
    wall = train_wall_seconds(run.metrics)
    if wall is not None:
        items.append(("training loop wall time", fmt_seconds(wall)))
    final = ev.get("final_val_loss", end.get("val_loss"))
    if number(final) is not None:
        items.append(("final validation loss", fmt_number(final)))
    size = adapter_bytes(run.run_dir)
    if size is not None:
        items.append(("adapter on disk", fmt_bytes(size)))
    return items


def summary_section(run: RunFiles) -> str:
    items = headline(run)
    return h.section("Summary", h.cards(items), section_id="summary") if items else ""


# ---------------------------------------------------------------------------------------------
# curves


def curves_section(run: RunFiles) -> str:
    train, val = run.rows("train"), run.rows("val")
    small = (5.6, 3.0)
    loss = line_chart("chart-loss", "Loss", [Series("train loss", *series(train, "loss")),
                                             Series("validation loss", *series(val, "val_loss"), markers=True)],
                      "optimiser step", "loss")
    lr = line_chart("chart-lr", "Learning rate", [Series("learning rate", *series(train, "lr"))], "optimiser step",
                    "learning rate", size=small)
    speed = line_chart("chart-throughput", "Throughput", [Series("tokens/s", *series(train, "tokens_per_s"))],
                       "optimiser step", "tokens / s", size=small)
    rl = run.rows("rl")
    rl_charts = [line_chart(f"chart-rl-{key.replace('_', '-')}", title, [Series(title, *series(rl, key))],
                            "iteration", title, size=small) for key, title in RL_CURVES]
    if not any([loss, lr, speed, *rl_charts]):
        return ""
    return h.section("Curves", loss, h.grid(lr, speed), h.grid(*rl_charts), section_id="curves")


# ---------------------------------------------------------------------------------------------
# evaluation


def eval_rows(before, after) -> list[list[str]]:
    """[split, measure, base, tuned, change] for every numeric measure of either side."""
    before = before if isinstance(before, dict) else {}
    after = after if isinstance(after, dict) else {}
    rows = []
    for split in list(after) + [s for s in before if s not in after]:
        b, a = split_metrics(before.get(split)), split_metrics(after.get(split))
        n = (after.get(split) or {}).get("n") if isinstance(after.get(split), dict) else None
        for metric in list(a) + [m for m in b if m not in a]:
            label = f"{split}" + (f" (n={n})" if number(n) is not None else "")
            rows.append([label, metric, fmt_metric(metric, b.get(metric)), fmt_metric(metric, a.get(metric)),
                         fmt_change(metric, b.get(metric), a.get(metric))])
    return rows


def eval_section(run: RunFiles) -> str:
    before, after = run.eval.get("before"), run.eval.get("after")
    rows = eval_rows(before, after)
    if not rows:
        return ""
    notes = []
    if not isinstance(before, dict):
        notes.append(h.note("The base model was not measured (eval.before_after: false): tuned numbers only."))
    for split in (after or {}).values() if isinstance(after, dict) else []:
        if isinstance(split, dict) and split.get("note"):
            notes.append(h.note(str(split["note"])))
    return h.section("Evaluation: base vs tuned", h.table([["split", "measure", "base", "tuned", "change"]] + rows,
                                                           numeric_from=2, table_id="eval-table"),
                     *notes, section_id="eval")


def learning_section(run: RunFiles) -> str:
    learning = run.eval.get("learning")
    if not isinstance(learning, dict):
        return ""
    verdict = {True: ("learned", "good"), False: ("did not learn", "bad"), None: ("cannot tell", "note")}
    text, cls = verdict.get(learning.get("learned"), ("cannot tell", "note"))
    rows = [["check", "base", "tuned", "ok"]]
    for name, check in (learning.get("checks") or {}).items():
        if isinstance(check, dict):
            rows.append([name, fmt_number(check.get("before")), fmt_number(check.get("after")), str(check.get("ok"))])
    lists = [h.note(f"warning: {w}", "bad") for w in learning.get("warnings") or []]
    lists += [h.note(f"try: {a}") for a in learning.get("advice") or []]
    return h.section("Did it learn?", h.note(f"verdict: {text}", cls), h.table(rows) if len(rows) > 1 else "",
                     *lists, section_id="learning")


def forgetting_section(run: RunFiles) -> str:
    from deltatune.eval.measures import forgetting_measures

    ev = run.eval
    measures = ev.get("forgetting")
    if not isinstance(measures, dict) and isinstance(ev.get("after"), dict):
        measures = forgetting_measures(ev.get("before"), ev["after"])  # older runs: from their before/after
    if not measures:
        return ""
    rows = [["measure", "value"]] + [[FORGETTING_LABELS.get(k, k), fmt_number(v)] for k, v in measures.items()
                                     if number(v) is not None]
    drift = (ev.get("after") or {}).get("forgetting") if isinstance(ev.get("after"), dict) else None
    notes = [h.note(str(drift["note"]))] if isinstance(drift, dict) and drift.get("note") else []
    notes.append(h.note("Negative probe changes are general knowledge lost; KL 0 means the tuned model still "
                        "predicts the base's own replies exactly as the base does. `deltatune eval RUN --control` "
                        "measures the noise floor of each."))
    return h.section("Forgetting", h.table(rows) if len(rows) > 1 else "", *notes, section_id="forgetting")


def _example_key(example: dict) -> str:
    return str(example.get("question", example.get("prompt", "")))


def examples_section(run: RunFiles) -> str:
    before, after = run.eval.get("before") or {}, run.eval.get("after") or {}
    if not isinstance(after, dict):
        return ""
    blocks = []
    for split, result in after.items():
        examples = result.get("examples") if isinstance(result, dict) else None
        if not isinstance(examples, list) or not examples:
            continue
        base = (before.get(split) or {}).get("examples") if isinstance(before, dict) else None
        base_by_key = {_example_key(e): e for e in base or [] if isinstance(e, dict)}
        rows = [["question", "reference", "base reply", "tuned reply", "tuned correct"]]
        for example in examples[:MAX_EXAMPLES]:
            if not isinstance(example, dict):
                continue
            key = _example_key(example)
            correct = example.get("contains", example.get("reward", ""))
            rows.append([key, example.get("answer", ""), (base_by_key.get(key) or {}).get("prediction",
                         (base_by_key.get(key) or {}).get("reply", "")),
                         example.get("prediction", example.get("reply", "")), str(correct)])
        shown = f"{min(len(examples), MAX_EXAMPLES)} of {len(examples)}"
        blocks.append(h.details(f"{split}: {shown} replies", h.table(rows, numeric_from=99)))
    return h.section("Sample generations", *blocks, section_id="examples") if blocks else ""


# ---------------------------------------------------------------------------------------------
# records


def method_report_section(run: RunFiles) -> str:
    report = run.eval.get("method_report")
    if not report:
        return ""
    return h.section("Method report", h.pre(json.dumps(report, indent=2, default=str)), section_id="method-report")


def records_section(run: RunFiles) -> str:
    blocks = []
    for key, title in (("resources", "resources"), ("budget", "budget"), ("data", "data")):
        value = run.eval.get(key)
        if isinstance(value, dict) and value:
            blocks.append(h.details(title, h.pre(json.dumps(value, indent=2, default=str))))
    return h.section("Run records", *blocks, section_id="records") if blocks else ""


def config_section(run: RunFiles) -> str:
    if not run.config_text:
        return ""
    return h.section("Resolved config", h.details("config.yaml", h.pre(run.config_text)), section_id="config")
