"""A comparison's report: OUT/report.md, OUT/report.json and a self-contained OUT/report.html.

    write_reports(out_dir, summary)     # summary = compare.summary.summarise(plan, outcomes)

One row per method: trainable parameters (count, %), peak memory, wall time, tokens/s, final
validation loss, every test metric, the three forgetting measures, adapter size — the mean
± sample std (n) over seeds when there are several. The HTML page adds the loss curves of all
methods on one chart, quality vs cost (trainable parameters, wall time, memory) and quality vs
forgetting, then every run with its status, error and a link to its own report.html.
"""

from __future__ import annotations

from pathlib import Path

from deltatune.atomic import write_json_atomic, write_text_atomic
from deltatune.compare.summary import FIELDS, FORGETTING
from deltatune.reports import html as h
from deltatune.reports.fmt import fmt_bytes, fmt_count, fmt_metric, fmt_number, is_fraction
from deltatune.reports.plots import COLOURS, Panel, Point, Series, line_chart, scatter_chart
from deltatune.reports.run_files import number, read_rows, series

UNITS = {key: unit for key, _, unit in FIELDS}


def fmt_value(key: str, value) -> str:
    unit = UNITS.get(key)
    if number(value) is None:
        return "-"
    if key.startswith("test."):
        return fmt_metric(key, value)
    if unit == "count":
        return fmt_count(value)
    if unit == "bytes":
        return fmt_bytes(value)
    if unit == "pct":
        return f"{value:.3g}%"
    if key.startswith("probe_"):
        return f"{value:+.1f}"
    return fmt_number(value)


def fmt_spread(key: str, value) -> str:
    """A standard deviation in the value's own unit (points for shares)."""
    if number(value) is None:
        return "-"
    if key.startswith("test.") and is_fraction(key):
        return f"{100 * value:.1f} pts"
    return fmt_value(key, value).lstrip("+")


def fmt_stat(key: str, stat: dict | None, several: bool) -> str:
    """'mean' for one seed; 'mean ± std (n=k)' over several seeds."""
    if not stat or stat.get("mean") is None:
        return "-"
    text = fmt_value(key, stat["mean"])
    if several:
        text += f" ± {fmt_spread(key, stat['std'])} (n={stat['n']})" if stat.get("std") is not None \
            else f" (n={stat['n']})"
    return text


def method_table(summary: dict) -> list[list[str]]:
    """Header + one row per method (the cells of report.md's and report.html's main table)."""
    keys, labels = summary["fields"], summary["labels"]
    used = [k for k in keys if any((m["measures"].get(k) or {}).get("n") for m in summary["summary"].values())]
    several = len(summary["seeds"]) > 1
    rows = [["method", "runs ok"] + [labels[k] for k in used]]
    for method, info in summary["summary"].items():
        ok = f"{info['finished']}/{info['runs']}" + (f" ({info['failed']} failed)" if info["failed"] else "")
        rows.append([method, ok] + [fmt_stat(k, info["measures"].get(k), several) for k in used])
    return rows


def write_reports(out: Path, summary: dict) -> dict[str, Path]:
    out = Path(out)
    paths = {"json": out / "report.json", "md": out / "report.md", "html": out / "report.html"}
    write_json_atomic(paths["json"], summary, indent=2, default=str)
    write_text_atomic(paths["md"], markdown(summary))
    write_text_atomic(paths["html"], html_page(summary))
    return paths


# ---------------------------------------------------------------------------------------------
# Markdown


def _md_table(rows: list[list[str]]) -> str:
    clean = [[str(c).replace("|", "\\|").replace("\n", " ") for c in row] for row in rows]
    lines = ["| " + " | ".join(clean[0]) + " |", "|" + "|".join("---" for _ in clean[0]) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in clean[1:]])


def _memory_note(summary: dict) -> str:
    """How to read the memory column: each run's own process, or one shared process."""
    if summary.get("isolated"):
        return ("memory is the training phase's peak (resident memory on a CPU, each run in its own process; the "
                "CUDA peak on a GPU)")
    return ("memory is the training phase's peak (resident memory on a CPU: the runs share one process, so a later "
            "run's figure can include heap kept from an earlier one; the CUDA peak on a GPU, reset per run)")


def markdown(summary: dict) -> str:
    seeds = summary["seeds"]
    parts = [f"# deltatune compare: {Path(summary['config']).name}", "",
             f"Config `{summary['config']}`, methods {', '.join(summary['methods'])}, "
             f"seeds {', '.join(map(str, seeds))}"
             + (f", overrides `{' '.join(summary['overrides'])}`" if summary["overrides"] else "") + ".", "",
             _md_table(method_table(summary)), "",
             "Values are each run's own (eval.json, metrics.jsonl, adapter/)"
             + ("; mean ± sample std over seeds (n runs)." if len(seeds) > 1 else ".")
             + " Probe changes are in points (negative: forgotten); KL is from the base on its own replies; "
               + _memory_note(summary) + "; wall time is the training loop's (validation included).", "",
             "## Per-method settings", "", _md_table(settings_rows(summary)), ""]
    failures = [r for r in summary["runs"] if r["status"] == "failed"]
    if failures:
        parts += ["## Failed runs", ""] + [f"- **{r['name']}**: {r['error']}" for r in failures] + [""]
    parts += ["## Runs", "", _md_table(run_rows(summary)), ""]
    return "\n".join(parts)


def settings_rows(summary: dict) -> list[list[str]]:
    rows = [["method", "train.lr", "method and lr from"]]
    for method, info in summary["summary"].items():
        rows.append([method, fmt_number(info.get("lr")), info.get("settings_source", "")])
    return rows


def run_rows(summary: dict) -> list[list[str]]:
    quality = summary["quality_metric"]
    rows = [["run", "status", summary["labels"].get(quality, quality), "run dir", "error"]]
    for r in summary["runs"]:
        status = r["status"] + (" (resumed)" if r.get("resumed") else "")
        rows.append([r["name"], status, fmt_value(quality, r["measures"].get(quality)), r["run_dir"],
                     (r.get("error") or "")[:300]])
    return rows


# ---------------------------------------------------------------------------------------------
# HTML


def html_page(summary: dict) -> str:
    seeds = summary["seeds"]
    intro = h.note(f"config {summary['config']} · seeds {', '.join(map(str, seeds))}"
                   + (f" · overrides: {' '.join(summary['overrides'])}" if summary["overrides"] else "")
                   + " · every value is the run's own (eval.json, metrics.jsonl, adapter/)"
                   + (", mean ± sample std over seeds" if len(seeds) > 1 else ""))
    blocks = [h.section("Methods", intro, h.table(method_table(summary), numeric_from=2, table_id="methods-table"),
                        section_id="methods"),
              _loss_section(summary), _quality_cost_section(summary), _quality_forgetting_section(summary),
              h.section("Per-method settings", h.table(settings_rows(summary), numeric_from=1), section_id="settings"),
              _failures_section(summary), _runs_section(summary)]
    return h.page(f"deltatune compare: {Path(summary['config']).name}", blocks,
                  subtitle=f"{len(summary['methods'])} methods × {len(seeds)} seed{'s' if len(seeds) > 1 else ''} · "
                           f"{summary['out']}")


def _loss_section(summary: dict) -> str:
    curves = []
    for i, method in enumerate(summary["methods"]):
        colour = COLOURS[i % len(COLOURS)]
        done = [r for r in summary["runs"] if r["method"] == method and r["measures"]]
        for j, run in enumerate(done):
            path = Path(run["run_dir"]) / "metrics.jsonl"
            rows = read_rows(path) if path.is_file() else []
            train = [r for r in rows if r.get("event") == "train"]
            val = [r for r in rows if r.get("event") == "val"]
            curves.append(Series(method if j == 0 else "", *series(train, "loss"), colour=colour, thin=j > 0))
            curves.append(Series("", *series(val, "val_loss"), markers=True, colour=colour, thin=j > 0))
    chart = line_chart("chart-loss-curves", "Loss curves (line: train, dashed with markers: validation)", curves,
                       "optimiser step", "loss")
    return h.section("Loss curves", chart, section_id="loss-curves") if chart else ""


def _points(summary: dict, x_key: str, y_key: str) -> list[Point]:
    scale = {k: 100.0 if k.startswith("test.") and is_fraction(k) else 1.0 for k in (x_key, y_key)}
    points = []
    for method, info in summary["summary"].items():
        x, y = info["measures"].get(x_key) or {}, info["measures"].get(y_key) or {}
        if x.get("mean") is None or y.get("mean") is None:
            continue
        points.append(Point(method, x["mean"] * scale[x_key], y["mean"] * scale[y_key],
                            x["std"] * scale[x_key] if x.get("std") is not None else None,
                            y["std"] * scale[y_key] if y.get("std") is not None else None))
    return points


def _colours(summary: dict) -> dict[str, str]:
    """Each method's colour, the same on every chart (its place in --methods)."""
    return {m: COLOURS[i % len(COLOURS)] for i, m in enumerate(summary["methods"])}


def _quality_label(summary: dict) -> str:
    quality = summary["quality_metric"]
    label = summary["labels"].get(quality, quality)
    return f"{label} (%)" if quality.startswith("test.") and is_fraction(quality) else label


def _quality_cost_section(summary: dict) -> str:
    quality, ylabel = summary["quality_metric"], _quality_label(summary)
    panels = [Panel("trainable parameters", ylabel, _points(summary, "trainable_params", quality), logx=True),
              Panel("train wall time (s)", ylabel, _points(summary, "train_wall_s", quality)),
              Panel("peak memory (MiB)", ylabel, _points(summary, "peak_memory_mib", quality))]
    chart = scatter_chart("chart-quality-cost", f"Quality ({ylabel}) vs cost", panels, _colours(summary))
    return h.section("Quality vs cost", chart, section_id="quality-cost") if chart else ""


def _quality_forgetting_section(summary: dict) -> str:
    quality, ylabel = summary["quality_metric"], _quality_label(summary)
    panels = [Panel(summary["labels"][key], ylabel, _points(summary, key, quality)) for key in FORGETTING]
    chart = scatter_chart("chart-quality-forgetting", f"Quality ({ylabel}) vs forgetting", panels, _colours(summary))
    if not chart:
        return h.section("Quality vs forgetting", h.note("No forgetting measures in these runs: set data.probe "
                                                         "(with eval.probe_samples) and data.forgetting_prompts."),
                         section_id="quality-forgetting")
    return h.section("Quality vs forgetting", chart,
                     h.note("Probe changes: points of the general probe's accuracy (negative: forgotten); KL: from "
                            "the base model on its own replies (0: unchanged)."), section_id="quality-forgetting")


def _failures_section(summary: dict) -> str:
    failed = [r for r in summary["runs"] if r["status"] == "failed"]
    if not failed:
        return ""
    blocks = []
    for r in failed:
        blocks.append(h.note(f"{r['name']}: {r['error']}", "bad"))
        if r.get("traceback"):
            blocks.append(h.details("traceback", h.pre(r["traceback"])))
    return h.section("Failed runs", *blocks, section_id="failures")


def _runs_section(summary: dict) -> str:
    out = Path(summary["out"])
    rows = run_rows(summary)
    table = h.table(rows, numeric_from=2, table_id="runs-table")
    links = []
    for r in summary["runs"]:
        page = Path(r["run_dir"]) / "report.html"
        if page.is_file():
            try:
                href = str(page.resolve().relative_to(out.resolve()))
            except ValueError:
                href = page.resolve().as_uri()
            links.append(h.link(href, f"{r['name']}: run report"))
    return h.section("Runs", table, "<p>" + " · ".join(links) + "</p>" if links else "", section_id="runs")
