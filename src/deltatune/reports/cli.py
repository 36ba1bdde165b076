"""`deltatune report RUN_DIR`: (re)write a run's self-contained HTML page, RUN_DIR/report.html.

    deltatune report runs/smollm2-sft-lora

Config, loss / learning-rate / throughput curves, memory, eval before vs after, sample
generations, the forgetting measures and the method's report, from the run's own files.
Works on any recipe's run dir and on an unfinished one (what is missing is left out).
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("report", help="write a run's HTML report (RUN_DIR/report.html)", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a training run's output.dir")
    p.set_defaults(func=_report)


def _report(args) -> int:
    from deltatune.reports.run_page import write_run_page

    path = write_run_page(args.run_dir)
    print(f"wrote {path}")
    return 0
