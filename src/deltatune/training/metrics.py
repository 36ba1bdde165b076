"""`metrics.jsonl`: one JSON object per logged event, appended and flushed as it happens.

    log = MetricsLog(run_dir / "metrics.jsonl")
    log.write("train", step=10, loss=1.23, lr=2e-4, tokens_per_s=850.0, grad_norm=0.7, epoch=0.4)
    log.write("val", step=10, val_loss=1.31)
    rows = read_metrics(run_dir / "metrics.jsonl")

Every row has `event` (train, val, early_stop, nan_stop, resume, end) and `time` (unix s).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from deltatune.atomic import write_text_atomic


def _clean(value):
    # JSON has no NaN/inf; write them as strings so the line stays valid JSON.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLog:
    """Append-only JSON-lines writer."""

    def __init__(self, path: str | Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled  # False on every process but rank 0 of a multi-process run

    def write(self, event: str, **fields) -> dict:
        row = {"event": event, "time": round(time.time(), 3)}
        row.update({k: _clean(v) for k, v in fields.items()})
        if not self.enabled:
            return row
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        return row

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after optimiser step `step` (on resume, that work is redone)."""
        if not self.enabled or not self.path.exists():
            return
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
        write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))  # never half a log


def read_metrics(path: str | Path, event: str | None = None) -> list[dict]:
    """All rows (or those of one event type), in order."""
    path = Path(path)
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if event is None or r.get("event") == event]
