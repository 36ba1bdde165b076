"""Train a comparison's runs one after another, resumably; a crash marks one run failed.

    outcomes = run_plan(plan)        # {run name: Outcome(status, error, ...)}; OUT/compare_state.json

Each run goes through the normal training entry, so it is an ordinary run dir: eval.json,
metrics.jsonl, adapter/, report.html. By default each run is `deltatune train` in a child
process (`train_in_subprocess`): its peak memory is its own (a CPU allocator keeps freed heap,
so in-process runs would inherit their predecessors' high-water mark) and a crash in native
code ends only that run. `train_one` runs the recipe's `run(cfg, resume)` in this process
(`deltatune compare --in-process`: no start-up cost per run). On a rerun of the same command:
- a finished run (eval.json holds `after`) is reused, not retrained;
- an interrupted run with a checkpoint resumes from it (`resume=True`); one that stopped before
  its first checkpoint starts again in a clean folder;
- a run that failed last time is tried again (its error is kept until it succeeds).
A run that raises is recorded as failed with its error (and the traceback's tail) and the next
run starts. Before the first run, every existing run dir's config.yaml must equal the plan's
config for it: a changed command (another override, another data file) must not silently mix
old and new runs. Ctrl-C stops the comparison (state saved; rerun to continue).
"""

from __future__ import annotations

import codecs
import collections
import gc
import importlib
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from deltatune.atomic import write_json_atomic, write_text_atomic
from deltatune.compare.plan import Plan, PlannedRun
from deltatune.errors import DeltatuneError
from deltatune.reports.run_files import read_run

STATE = "compare_state.json"


@dataclass
class Outcome:
    status: str  # finished | reused | failed | interrupted | pending
    error: str | None = None
    traceback: str | None = None
    seconds: float | None = None  # this compare's wall time for the run (when it trained it now)
    resumed: bool = False


def is_finished(run_dir: Path) -> bool:
    try:
        return read_run(run_dir).finished
    except DeltatuneError:
        return False


def check_existing(plan: Plan) -> None:
    """Every run dir that would be reused or resumed holds the config the plan gives it (else
    an error saying which run and which keys differ, before anything trains)."""
    from deltatune.training.checkpoint import latest_checkpoint

    for run in plan.runs:
        saved = run.run_dir / "config.yaml"
        if not saved.is_file() or not (is_finished(run.run_dir) or latest_checkpoint(run.run_dir)):
            continue  # nothing there would be reused or resumed: the folder starts afresh
        old = yaml.safe_load(saved.read_text()) or {}
        new = run.cfg.model_dump(mode="json")
        diff = sorted(_differences(old, new))
        if diff:
            raise DeltatuneError(
                f"{run.run_dir} was trained with another config than this compare gives it "
                f"({', '.join(diff[:6])}{' ...' if len(diff) > 6 else ''} differ). Use another --out DIR, "
                f"or delete {run.run_dir} to retrain it.")


def _differences(old, new, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in set(old) | set(new):
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


def load_state(out: Path) -> dict[str, Outcome]:
    import json

    path = out / STATE
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}
    return {name: Outcome(**{k: v for k, v in row.items() if k in Outcome.__dataclass_fields__})
            for name, row in (raw.get("runs") or {}).items() if isinstance(row, dict)}


def save_state(out: Path, outcomes: dict[str, Outcome]) -> None:
    write_json_atomic(out / STATE, {"runs": {name: asdict(o) for name, o in outcomes.items()}})


def run_plan(plan: Plan, train_run=None, on_progress=print) -> dict[str, Outcome]:
    """Train (or reuse) every planned run in order; returns each run's outcome."""
    check_existing(plan)
    plan.out.mkdir(parents=True, exist_ok=True)
    previous = load_state(plan.out)
    outcomes = {run.name: Outcome("pending") for run in plan.runs}
    train_run = train_run or train_one
    total = len(plan.runs)
    for i, run in enumerate(plan.runs, 1):
        position = plan.methods.index(run.method) + 1
        head = f"[compare {i}/{total}] {run.method} (method {position} of {len(plan.methods)}), seed {run.seed}"
        if is_finished(run.run_dir):
            outcomes[run.name] = Outcome("reused", seconds=getattr(previous.get(run.name), "seconds", None))
            on_progress(f"{head}: finished earlier, reusing {run.run_dir}")
            continue
        resume = _prepare_folder(run)
        on_progress(f"{head}: {'resuming' if resume else 'training'} -> {run.run_dir}")
        started = time.perf_counter()
        try:
            train_run(run, resume)
        except KeyboardInterrupt:
            outcomes[run.name] = Outcome("interrupted", "interrupted (Ctrl-C)")
            save_state(plan.out, outcomes)
            raise
        except Exception as err:  # noqa: BLE001 - one method's crash must not stop the others
            if isinstance(err, ChildRunFailed):  # the child's own error line and output
                error, trace = str(err), err.output_tail
            else:
                error, trace = f"{type(err).__name__}: {err}", "".join(traceback.format_exception(err)[-12:])
            outcomes[run.name] = Outcome("failed", error, trace, round(time.perf_counter() - started, 2), resume)
            on_progress(f"{head}: FAILED: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
        else:
            outcomes[run.name] = Outcome("finished", seconds=round(time.perf_counter() - started, 2), resumed=resume)
        finally:
            _release_memory()
        save_state(plan.out, outcomes)
    save_state(plan.out, outcomes)
    return outcomes


def _prepare_folder(run: PlannedRun) -> bool:
    """True to resume (a checkpoint exists); a folder with none is cleared for a fresh start (its
    metrics.jsonl would otherwise carry the lost attempt's rows into the new run's curves)."""
    from deltatune.training.checkpoint import latest_checkpoint

    if not run.run_dir.is_dir():
        return False
    if latest_checkpoint(run.run_dir) is not None:
        return True
    shutil.rmtree(run.run_dir)
    return False


def train_one(run: PlannedRun, resume: bool) -> Path:
    """`deltatune train`'s path: the recipe the config names, `run(cfg, resume)`."""
    from deltatune.recipes import RECIPES

    recipe = importlib.import_module(RECIPES[run.cfg.recipe])
    _reset_peaks()
    return recipe.run(run.cfg, resume=resume)


class ChildRunFailed(Exception):
    """`deltatune train` in a child process exited non-zero; str() is its error line."""

    def __init__(self, error: str, output_tail: str):
        super().__init__(error)
        self.output_tail = output_tail


def train_in_subprocess(run: PlannedRun, resume: bool) -> Path:
    """`deltatune train OUT/configs/<run>.yaml [--resume]` in a child process, its output shown
    here as it comes; a non-zero exit raises ChildRunFailed with the child's error line."""
    config = run.run_dir.parent.parent / "configs" / f"{run.name}.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(config, yaml.safe_dump(run.cfg.model_dump(mode="json"), sort_keys=False))
    command = [sys.executable, "-m", "deltatune", "train", str(config), *(["--resume"] if resume else [])]
    tail: collections.deque[str] = collections.deque(maxlen=200)  # the last pieces of output
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ.copy()) as child:
        for chunk in iter(lambda: child.stdout.read1(65536), b""):
            text = decoder.decode(chunk)
            sys.stdout.write(text)
            sys.stdout.flush()
            tail.append(text)
        code = child.wait()
    if code != 0:
        output = "".join(tail)[-6000:]
        raise ChildRunFailed(_error_line(output, code), output)
    return run.run_dir


def _error_line(output: str, code: int) -> str:
    """The child's `deltatune: error: ...` message, else a traceback's last line, else the exit code."""
    lines = [line.strip() for line in output.replace("\r", "\n").splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("deltatune: error: "):
            return "DeltatuneError: " + line[len("deltatune: error: "):]
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b", line):
            return line
    return f"deltatune train exited with code {code}" + (f": {lines[-1]}" if lines else "")


def _reset_peaks() -> None:
    """Each run's CUDA peak is its own (the counter is per process, and the runs share one)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()


def _release_memory() -> None:
    gc.collect()
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
