"""deltatune.reports: self-contained HTML reports (inline CSS, charts as inline SVG).

    deltatune report RUN_DIR          # RUN_DIR/report.html; `deltatune train` writes it at the end
    from deltatune.reports import write_run_page

Modules: `html` (page, section, table, escape), `plots` (matplotlib figures as inline SVG with
stable ids), `run_files` (read a run dir defensively), `fmt` (how numbers are written),
`run_page` (one run's page), `cli` (`deltatune report`). `deltatune.compare` builds its
comparison page from the same pieces.
"""

from deltatune.reports.run_page import write_run_page

__all__ = ["write_run_page"]
