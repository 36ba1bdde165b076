"""Self-contained HTML pages: one file, inline CSS, no scripts, no external files.

    body = [section("Loss", svg), section("Eval", table([["split", "base"], ["test", "1.0"]]))]
    write_text_atomic(path, page("run report", body))

Every text that comes from a run (config values, model replies, error messages) goes through
`escape`; the only raw markup a page holds is what these helpers and `reports.plots` make.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2a44;color:#fff;padding:18px 28px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;opacity:.8;font-size:13px}
main{max-width:1180px;margin:0 auto;padding:12px 24px 40px}
section{background:#fff;border:1px solid #dde1e8;border-radius:8px;margin:16px 0;padding:14px 18px}
section h2{font-size:17px;margin:0 0 10px}
table{border-collapse:collapse;font-size:13px;margin:6px 0;max-width:100%}
th,td{border-bottom:1px solid #e6e8ee;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f0f2f6;font-weight:600} td.num{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #dde1e8;border-radius:6px;padding:8px 12px;min-width:130px;background:#fafbfc}
.card b{display:block;font-size:18px} .card span{font-size:12px;color:#5a6375}
.scroll{overflow-x:auto} .chart{margin:8px 0}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:8px}
.chart svg{max-width:100%;height:auto}
pre{background:#f4f5f8;padding:10px;overflow:auto;font-size:12px;max-height:480px}
.note{color:#5a6375;font-size:13px} .bad{color:#a32020} .good{color:#1f7a36}
details summary{cursor:pointer;font-weight:600;margin:6px 0}
"""


def escape(value) -> str:
    """`value` as HTML text (quotes escaped too, so it is safe inside attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def page(title: str, sections: Iterable[str], subtitle: str = "") -> str:
    """A whole HTML document: header with `title` / `subtitle`, then the section blocks."""
    sub = f"<p>{escape(subtitle)}</p>" if subtitle else ""
    body = "\n".join(s for s in sections if s)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<header><h1>{escape(title)}</h1>{sub}</header>\n<main>\n{body}\n</main>\n</body>\n</html>\n")


def section(heading: str, *blocks: str, section_id: str | None = None) -> str:
    """A titled box holding already-made markup blocks ('' blocks are dropped)."""
    inner = "\n".join(b for b in blocks if b)
    ident = f' id="{escape(section_id)}"' if section_id else ""
    return f"<section{ident}>\n<h2>{escape(heading)}</h2>\n{inner}\n</section>"


def table(rows: Sequence[Sequence], header: bool = True, numeric_from: int = 1, table_id: str | None = None) -> str:
    """A table of text cells (escaped); the first row is the header when `header`. Columns from
    `numeric_from` on are right-aligned (numbers line up)."""
    if not rows:
        return ""
    out = ['<div class="scroll">', f'<table id="{escape(table_id)}">' if table_id else "<table>"]
    for r, row in enumerate(rows):
        tag = "th" if header and r == 0 else "td"
        cells = []
        for c, cell in enumerate(row):
            cls = ' class="num"' if tag == "td" and c >= numeric_from else ""
            cells.append(f"<{tag}{cls}>{escape(cell)}</{tag}>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table></div>")
    return "\n".join(out)


def cards(items: Iterable[tuple[str, str]]) -> str:
    """Headline numbers as small boxes: (label, value) pairs."""
    boxes = [f'<div class="card"><b>{escape(value)}</b><span>{escape(label)}</span></div>' for label, value in items]
    return f'<div class="cards">{"".join(boxes)}</div>' if boxes else ""


def grid(*blocks: str) -> str:
    """Charts side by side where the window is wide enough ('' blocks dropped)."""
    kept = [b for b in blocks if b]
    return f'<div class="charts">{"".join(kept)}</div>' if kept else ""


def pre(text: str) -> str:
    return f"<pre>{escape(text)}</pre>"


def note(text: str, cls: str = "note") -> str:
    return f'<p class="{escape(cls)}">{escape(text)}</p>'


def details(summary: str, *blocks: str) -> str:
    """A collapsed block (long tables, JSON)."""
    return f"<details><summary>{escape(summary)}</summary>\n" + "\n".join(b for b in blocks if b) + "\n</details>"


def link(href: str, text: str) -> str:
    return f'<a href="{escape(href)}">{escape(text)}</a>'
