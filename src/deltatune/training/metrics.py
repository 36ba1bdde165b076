"""`metrics.jsonl`: one JSON object per logged event, appended and flushed as it happens.

    log = MetricsLog(run_dir / "metrics.jsonl")
    log.write("train", step=10, loss=1.23, lr=2e-4, tokens_per_s=850.0, grad_norm=0.7, epoch=0.4)
    log.write("val", step=10, val_loss=1.31)
    rows = read_metrics(run_dir / "metrics.jsonl")

Every row has `event` (train, val, early_stop, nan_stop, resume, end) and `time` (unix s).

With `tensorboard=True` (`logging.tensorboard`) every number of every row is also a TensorBoard
scalar in RUN_DIR/tensorboard/, tagged `event/field` ("train/loss", "train/lr",
"train/tokens_per_s", "val/val_loss", "end/peak_rss_mib", ...; nested dicts as
`event/field/key`) at the row's `step` and `time`: `tensorboard --logdir RUN_DIR/tensorboard`.
The writer flushes after every row, so a live run shows up at once; a resume's
`truncate_after(step)` makes the next event file purge the redone steps (TensorBoard's
`purge_step`), as metrics.jsonl drops them.
"""

from __future__ import annotations

import importlib.util
import json
import math
import time
from pathlib import Path

from deltatune.atomic import write_text_atomic
from deltatune.errors import DeltatuneError

TENSORBOARD_DIR = "tensorboard"  # beside metrics.jsonl
_NOT_SCALARS = ("event", "time", "step")


def tensorboard_missing() -> str | None:
    """Why `logging.tensorboard: true` cannot work here, or None when it can."""
    if importlib.util.find_spec("tensorboard") is None:
        return ("logging.tensorboard needs the tensorboard package, which is not installed: "
                "pip install 'deltatune[tensorboard]' (or set logging.tensorboard: false)")
    return None


def _clean(value):
    # JSON has no NaN/inf; write them as strings so the line stays valid JSON.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLog:
    """Append-only JSON-lines writer, optionally mirrored to TensorBoard."""

    def __init__(self, path: str | Path, enabled: bool = True, tensorboard: bool = False):
        self.path = Path(path)
        self.enabled = enabled  # False on every process but rank 0 of a multi-process run
        self.tensorboard = tensorboard and enabled
        if self.tensorboard and (problem := tensorboard_missing()):
            raise DeltatuneError(problem)
        self._writer = None  # the SummaryWriter, opened at the first row
        self._purge_step: int | None = None  # set by truncate_after: the next writer drops steps >= it
        self._last_step = 0

    @property
    def tensorboard_dir(self) -> Path:
        return self.path.parent / TENSORBOARD_DIR

    def write(self, event: str, **fields) -> dict:
        row = {"event": event, "time": round(time.time(), 3)}
        row.update({k: _clean(v) for k, v in fields.items()})
        if not self.enabled:
            return row
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        if self.tensorboard:
            self._mirror(event, fields, row["time"])
        return row

    def _mirror(self, event: str, fields: dict, walltime: float) -> None:
        """Every number of the row as a scalar `event/field` at the row's step; flushed now."""
        step = fields.get("step")
        self._last_step = step = int(step) if isinstance(step, (int, float)) else self._last_step
        writer = self._open()
        for tag, value in _scalars(event, {k: v for k, v in fields.items() if k not in _NOT_SCALARS}):
            writer.add_scalar(tag, value, global_step=step, walltime=walltime)
        writer.flush()
        if event == "end":  # the run's last row: let the writer's thread and file go
            self.close()

    def _open(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.tensorboard_dir), purge_step=self._purge_step)
            self._purge_step = None
        return self._writer

    def close(self) -> None:
        """Flush and close the TensorBoard writer (a later row opens a new event file)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after optimiser step `step` (on resume, that work is redone)."""
        if not self.enabled:
            return
        if self.tensorboard:  # TensorBoard drops events at steps >= purge_step of an earlier file
            self.close()
            self._purge_step = step + 1
        if not self.path.exists():
            return
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
        write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))  # never half a log


def _scalars(prefix: str, fields: dict):
    """(tag, float) for every number in `fields`, nested dicts flattened; bools and text skipped."""
    for key, value in fields.items():
        tag = f"{prefix}/{key}"
        if isinstance(value, dict):
            yield from _scalars(tag, value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield tag, float(value)


def read_metrics(path: str | Path, event: str | None = None) -> list[dict]:
    """All rows (or those of one event type), in order."""
    path = Path(path)
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if event is None or r.get("event") == event]
