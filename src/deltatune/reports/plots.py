"""Charts as inline SVG markup: matplotlib figures written with `savefig(format="svg")`.

    markup = line_chart("chart-loss", "Loss", [Series("train", steps, losses)], "step", "loss")
    markup = scatter_chart("chart-quality-cost", "Quality vs cost", [Panel("trainable params", "test", points)])

The SVG goes into the page itself (no image files beside it), so a report is one file, and
every curve is a DOM element (`<path>` inside `<g id="<chart>-line2d_1">`) a browser test can
find. Each chart's root `<svg>` carries a stable `id`, `role="img"` and an `aria-label`; the
ids matplotlib gives its own elements are prefixed with the chart's id, so several charts on
one page never share an id (nor a clip path). Text stays text (`svg.fonttype: none`). An empty
chart (no points at all) is '' — the caller leaves the section out.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass, field

from deltatune.reports.html import escape

RC = {"svg.fonttype": "none", "svg.hashsalt": "deltatune", "font.size": 9, "axes.grid": True, "grid.alpha": 0.3}
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
           "#bcbd22"]


@dataclass
class Series:
    """One curve: `markers` draws points joined by a dashed line (validation), else a line."""

    label: str
    xs: list[float]
    ys: list[float]
    markers: bool = False
    colour: str | None = None
    thin: bool = False  # a secondary curve (another seed): lighter
    # An empty label or a thin curve adds no legend entry.


@dataclass
class Point:
    label: str
    x: float
    y: float
    xerr: float | None = None
    yerr: float | None = None


@dataclass
class Panel:
    xlabel: str
    ylabel: str
    points: list[Point] = field(default_factory=list)
    logx: bool = False


def finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers / CI
    import matplotlib.pyplot as plt

    return plt


def figure_svg(fig, chart_id: str, label: str) -> str:
    """The figure as inline SVG markup with `chart_id` / `label` on its root element."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]  # drop the XML declaration and DOCTYPE: it sits inside HTML
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)  # RDF creator block: not needed
    text = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{chart_id}-{m.group(1)}"', text)
    text = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{chart_id}-{m.group(1)})", text)
    text = re.sub(r'href="#([^"]+)"', lambda m: f'href="#{chart_id}-{m.group(1)}"', text)
    head_end = text.index(">")
    text = (f'{text[:head_end]} id="{escape(chart_id)}" class="chart-svg" role="img" aria-label="{escape(label)}">'
            f"<title>{escape(label)}</title>{text[head_end + 1:]}")
    return f'<div class="chart">{text}</div>'


def line_chart(chart_id: str, title: str, series: list[Series], xlabel: str, ylabel: str,
               logy: bool = False, size: tuple[float, float] = (7.5, 3.6)) -> str:
    """Curves against a common x axis (whole steps); '' when no series has a finite point."""
    cleaned = []
    for s in series:
        pts = [(x, y) for x, y in zip(s.xs, s.ys) if finite(x) and finite(y)]
        if pts:
            cleaned.append((s, pts))
    if not cleaned:
        return ""
    plt = _pyplot()
    with plt.rc_context(RC):
        fig, ax = plt.subplots(figsize=size, dpi=100)
        try:
            for i, (s, pts) in enumerate(cleaned):
                xs, ys = zip(*pts)
                colour = s.colour or COLOURS[i % len(COLOURS)]
                label = None if s.thin or not s.label else s.label
                if s.markers:
                    ax.plot(xs, ys, "o--", color=colour, label=label, markersize=3.5, linewidth=1,
                            alpha=0.45 if s.thin else 1)
                else:
                    ax.plot(xs, ys, "-", color=colour, label=label, linewidth=0.8 if s.thin else 1.4,
                            alpha=0.45 if s.thin else 1)
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if logy and all(y > 0 for _, pts in cleaned for _, y in pts):
                ax.set_yscale("log")
            else:
                ax.ticklabel_format(axis="y", useOffset=False)  # 10.79 reads as 10.79, not 1e-5 + 10.78
            ax.set_title(title)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            if any(s.label and not s.thin for s, _ in cleaned):
                ax.legend(fontsize=8, ncol=2 if len(cleaned) > 6 else 1)
            fig.tight_layout()
            return figure_svg(fig, chart_id, title)
        finally:
            plt.close(fig)


def scatter_chart(chart_id: str, title: str, panels: list[Panel], colours: dict[str, str] | None = None) -> str:
    """One labelled point per item in each panel (error bars where given: spread over seeds);
    '' when no panel has a finite point. Panels without points are left out. An item keeps one
    colour across panels (`colours[label]`, else by first appearance)."""
    colours = colours or {}
    kept = [(p, [q for q in p.points if finite(q.x) and finite(q.y)]) for p in panels]
    kept = [(p, pts) for p, pts in kept if pts]
    if not kept:
        return ""
    plt = _pyplot()
    with plt.rc_context(RC):
        fig, axes = plt.subplots(1, len(kept), figsize=(4.2 * len(kept) + 0.6, 3.6), dpi=100, squeeze=False)
        try:
            names = list(dict.fromkeys(q.label for p in panels for q in p.points))  # first-seen order
            colour = {n: colours.get(n) or COLOURS[i % len(COLOURS)] for i, n in enumerate(names)}
            for ax, (panel, pts) in zip(axes[0], kept):
                for q in pts:
                    ax.errorbar([q.x], [q.y], xerr=[q.xerr] if finite(q.xerr) else None,
                                yerr=[q.yerr] if finite(q.yerr) else None, fmt="o", color=colour[q.label],
                                markersize=6, capsize=3, label=q.label)
                    ax.annotate(q.label, (q.x, q.y), textcoords="offset points", xytext=(5, 4), fontsize=8)
                if panel.logx and all(q.x > 0 for q in pts):
                    from matplotlib.ticker import NullFormatter

                    ax.set_xscale("log")
                    ax.xaxis.set_minor_formatter(NullFormatter())  # labelled decades only: no overlaps
                ax.set_xlabel(panel.xlabel)
                ax.set_ylabel(panel.ylabel)
            fig.suptitle(title)
            fig.tight_layout()
            return figure_svg(fig, chart_id, title)
        finally:
            plt.close(fig)
