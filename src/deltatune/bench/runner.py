"""One bench run: tokenise once, start a worker per side, rotate steps, measure the matmul peak.

    result = run_bench(spec, baselines=("hf_loop", "trl"), command="deltatune bench ...")

Order of a run: the parent tokenises the workload's batches (deltatune.bench.workloads) into a
scratch folder and starts every side's worker at once (their setup overlaps; it is not timed).
When all are ready, it measures this machine's fp32 matmul peak, then runs the steps: for step
i every side runs its step i in turn while the others wait, the first side rotating with i, so
no side always runs right after another's cache-warming. After the last step it measures the
peak again (the report keeps the higher: a noisy neighbour lowers it) and collects each side's
training-phase memory. A baseline whose worker fails is reported as unavailable with its reason;
deltatune failing stops the run with a DeltatuneError.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from deltatune.bench import flops, report
from deltatune.bench.protocol import ThreadWorker, WorkerFailed, WorkerProcess
from deltatune.bench.workloads import BenchSpec, prepare_steps, save_steps, step_tokens
from deltatune.errors import DeltatuneError

BASELINES = ("hf_loop", "trl")


@dataclass
class SideRun:
    """What the parent learns from one side's worker."""

    name: str
    worker: WorkerProcess
    info: dict | None = None
    seconds: list[float] = field(default_factory=list)
    losses: list[float | None] = field(default_factory=list)
    memory: dict | None = None
    failure: str | None = None

    @property
    def live(self) -> bool:
        return self.failure is None


def note(message: str) -> None:
    """Progress text on stderr (stdout carries the result, e.g. --json)."""
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)


def run_bench(spec: BenchSpec, baselines: tuple[str, ...] = BASELINES, matmul_sizes: tuple[int, ...] = (1024, 2048),
              command: str = "deltatune bench", inline: bool = False) -> dict:
    """Run the workload on deltatune and the baselines; the result dict `report.py` writes.
    `inline`: every side on a thread of this process (tests: no start-up, no per-side memory)."""
    from deltatune.bench.deltatune_side import bench_config
    from deltatune.models.loader import load_tokenizer

    tokenizer = load_tokenizer(spec.model)
    spec.pad_id = int(tokenizer.pad_token_id)
    bench_config(spec)  # a bad --deltatune-opt fails here, before any worker starts
    steps = prepare_steps(spec, tokenizer)
    # inline, the libraries' prints (the Trainer's log lines) would land on stdout, the result's
    quiet = contextlib.redirect_stdout(sys.stderr) if inline else contextlib.nullcontext()
    with quiet, tempfile.TemporaryDirectory(prefix="deltatune-bench-") as scratch:
        workdir = Path(scratch)
        spec.save(workdir / "spec.json")
        save_steps(steps, workdir / "steps.json")
        runs: dict[str, SideRun] = {}
        try:
            _start(runs, ("deltatune", *baselines), workdir, spec.threads, inline)
            shape = _model_shape(spec, steps)
            peaks = [flops.matmul_peak(spec.threads, matmul_sizes, shape)]
            _train(spec, steps, list(runs.values()))
            peaks.append(flops.matmul_peak(spec.threads, matmul_sizes, shape))
            for run in runs.values():
                _exchange(run, "finish", lambda event, run=run: setattr(run, "memory", event["memory"]))
                if not run.worker.measures_memory:
                    run.memory = None  # a thread's peak would be the whole process's
        finally:
            for run in runs.values():
                run.worker.close()
    return report.assemble(spec, steps, runs, peaks, command)


def _start(runs: dict, names, workdir: Path, threads: int, inline: bool) -> None:
    """Start every side and wait until each is set up. Processes set up at once; threads one
    after another (transformers' model loading is not thread-safe: it patches torch globally)."""
    note(f"bench: starting {', '.join(names)} ({threads} thread(s) each) ...")
    launcher = ThreadWorker if inline else WorkerProcess
    for name in names:
        runs[name] = SideRun(name, launcher.start(name, workdir, threads))
        if inline:
            _ready(runs[name])
    if not inline:
        for run in runs.values():
            _ready(run)


def _ready(run: SideRun) -> None:
    _exchange(run, None, lambda event: setattr(run, "info", event["info"]))


def _exchange(run: SideRun, command: str | None, on_event) -> None:
    """Send `command` (None: just listen) and hand the reply to `on_event`; a failing baseline
    is marked unavailable, a failing deltatune side stops the run."""
    if not run.live:
        return
    try:
        if command is not None:
            run.worker.send(command)
        on_event(run.worker.read())
    except WorkerFailed as err:
        if run.name == "deltatune":
            raise DeltatuneError(f"bench: the deltatune side failed: {err.reason}") from None
        run.failure = err.reason
        note(f"bench: {run.name} is unavailable: {err.reason}")
        run.worker.close(timeout=5)


def _train(spec: BenchSpec, steps: list[list[dict]], runs: list[SideRun]) -> None:
    from deltatune.training.progress import progress_bar

    tokens = [step_tokens(examples, spec.spec.objective)[0] for examples in steps]
    bar = progress_bar(spec.total_steps, desc=f"bench {spec.workload}")
    try:
        for i in range(spec.total_steps):
            first = i % len(runs)
            for run in runs[first:] + runs[:first]:
                _exchange(run, "step", lambda event, run=run: _record(run, event))
            bar.set_postfix({run.name: f"{tokens[i] / run.seconds[-1]:.0f} tok/s" for run in runs if run.live},
                            refresh=False)
            bar.update(1)
    finally:
        bar.close()


def _record(run: SideRun, event: dict) -> None:
    run.seconds.append(float(event["seconds"]))
    run.losses.append(None if event.get("loss") is None else float(event["loss"]))


def _model_shape(spec: BenchSpec, steps: list[list[dict]]) -> tuple[int, int, int] | None:
    """(tokens of a mean step, hidden, intermediate): the MLP up-projection's matmul."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(spec.model).get_text_config()
        tokens = sum(step_tokens(examples, spec.spec.objective)[0] for examples in steps) // len(steps)
        return tokens, int(config.hidden_size), int(config.intermediate_size)
    except (OSError, AttributeError, ValueError):
        return None
