"""One side of the bench in its own process (started by `runner.py`, not by hand).

    python -m deltatune.bench.worker {deltatune|hf_loop|trl} WORKDIR
    serve(side, workdir, channel)        # the same, on a thread of the caller (tests: --inline)

Reads WORKDIR/spec.json and WORKDIR/steps.json (written by the parent), builds its side, says
`ready` with its setup memory, then runs one step per `step` command and finally reports the
training phase's memory on `finish` (deltatune.bench.protocol). A fresh process per side keeps
each side's peak resident memory its own.
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path

from deltatune.bench.memory import TrainingPhase
from deltatune.bench.protocol import WorkerChannel
from deltatune.bench.workloads import BenchSpec, load_steps


def drive(side, steps: list[list[dict]], channel: WorkerChannel) -> None:
    """Run a step-at-a-time side (deltatune, hf_loop) under the parent's commands."""
    batches = [side.collate(examples) for examples in steps]  # collation is not timed on any side
    phase = TrainingPhase.begin()
    channel.emit("ready", info=side.info)
    for index, batch in enumerate(batches):
        channel.expect("step")
        start = time.perf_counter()
        loss = side.step(batch)
        channel.emit("step", index=index, seconds=time.perf_counter() - start, loss=loss)
    channel.expect("finish")
    channel.emit("done", memory=phase.end())


def run_side(name: str, spec: BenchSpec, steps: list[list[dict]], channel: WorkerChannel, workdir: Path) -> None:
    if name == "deltatune":
        from deltatune.bench.deltatune_side import DeltatuneSide

        drive(DeltatuneSide(spec), steps, channel)
    elif name == "hf_loop":
        from deltatune.bench.hf_loop import HfLoopSide

        drive(HfLoopSide(spec), steps, channel)
    elif name == "trl":
        try:
            import trl  # noqa: F401
        except ImportError as err:
            raise RuntimeError(f"TRL is not installed ({err}); pip install 'trl>=1.0'") from None
        from deltatune.bench.trl_side import run_trl

        run_trl(spec, steps, channel, workdir)
    else:
        raise ValueError(f"unknown bench side {name!r}")


def serve(name: str, workdir: Path, channel: WorkerChannel) -> int:
    """Run side `name` over `channel`; a failure becomes an `error` event (the parent reports
    its reason: for a baseline, as unavailable)."""
    try:
        import torch

        spec = BenchSpec.load(workdir / "spec.json")
        torch.set_num_threads(spec.threads)
        run_side(name, spec, load_steps(workdir / "steps.json"), channel, workdir)
    except Exception as err:
        traceback.print_exc()
        channel.emit("error", message=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
        return 1
    return 0


def main(argv: list[str]) -> int:
    return serve(argv[0], Path(argv[1]), WorkerChannel.take_stdout())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
