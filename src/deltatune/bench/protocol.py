"""The parent <-> worker line protocol: the parent says when each side may run a step.

    worker:  channel = WorkerChannel.take_stdout()     # stdout is now ours; prints go to stderr
             channel.emit("ready", info={...});  channel.expect("step");  channel.emit("step", loss=...)
    parent:  worker = WorkerProcess.start("trl", workdir, threads)   # or ThreadWorker.start (tests)
             event = worker.read()                   # {"event": "ready", ...}
             worker.send("step"); event = worker.read()

Events are one JSON object per line behind `PREFIX`, on a private copy of the worker's stdout
(the libraries' own prints are sent to stderr, which goes to `WORKDIR/SIDE.log`). Commands are
single words on the worker's stdin: `step`, `finish`. A worker that fails emits an `error`
event (message + traceback) before exiting; one that dies silently is reported with the tail
of its log. `ThreadWorker` runs the same worker code on a thread of the parent, over queues:
no process start-up (the tests' `--inline`), but no memory of its own either.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

PREFIX = "@@deltatune-bench "


class WorkerFailed(Exception):
    """A side's worker reported an error or died; `reason` is for the report."""

    def __init__(self, side: str, reason: str):
        super().__init__(f"{side}: {reason}")
        self.side, self.reason = side, reason


class WorkerChannel:
    """The worker's end: events out, commands in."""

    def __init__(self, out, inp):
        self.out, self.inp = out, inp

    @classmethod
    def take_stdout(cls) -> "WorkerChannel":
        """Keep a private handle on stdout for events and point sys.stdout at stderr, so
        nothing a library prints can interleave with an event."""
        sys.stdout.flush()
        out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
        sys.stdout = sys.stderr
        return cls(out, sys.stdin)

    def emit(self, event: str, **data) -> None:
        self.out.write(PREFIX + json.dumps({"event": event, **data}) + "\n")
        self.out.flush()

    def expect(self, command: str) -> None:
        line = self.inp.readline()
        if line.strip() != command:
            raise SystemExit(f"bench worker: expected {command!r} from the parent, got {line.strip()!r}")


def _parse(side: str, line: str) -> dict | None:
    """The event on `line` (None for a line that is not one); WorkerFailed on an `error` event."""
    if not line.startswith(PREFIX):
        return None
    event = json.loads(line[len(PREFIX):])
    if event["event"] == "error":
        raise WorkerFailed(side, event["message"])
    return event


class WorkerProcess:
    """The parent's end: one side's worker process."""

    measures_memory = True  # a process of its own: its peak is the side's

    def __init__(self, side: str, proc: subprocess.Popen, log_path: Path):
        self.side, self.proc, self.log_path = side, proc, log_path

    @classmethod
    def start(cls, side: str, workdir: Path, threads: int) -> "WorkerProcess":
        log_path = Path(workdir) / f"{side}.log"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
               "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
               "DELTATUNE_PROGRESS": "0", "TRANSFORMERS_VERBOSITY": "error", "PYTHONUNBUFFERED": "1"}
        with open(log_path, "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "deltatune.bench.worker", side, str(workdir)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                                    env=env, bufsize=1)
        return cls(side, proc, log_path)

    def send(self, command: str) -> None:
        try:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerFailed(self.side, f"worker exited early; {self.log_tail()}") from None

    def read(self) -> dict:
        """The next event; WorkerFailed on an `error` event or when the worker has gone."""
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait()
                raise WorkerFailed(self.side, f"worker exited (code {self.proc.returncode}); {self.log_tail()}")
            event = _parse(self.side, line)
            if event is not None:
                return event

    def log_tail(self, lines: int = 6) -> str:
        try:
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-lines:]
        except OSError:
            return "no log"
        return "log: " + " | ".join(tail) if tail else "empty log"

    def close(self, timeout: float = 30.0) -> None:
        """Let the worker exit (stdin closed), killing it if it does not."""
        try:
            if self.proc.stdin and not self.proc.stdin.closed:
                self.proc.stdin.close()
            self.proc.wait(timeout=timeout)
        except (subprocess.TimeoutExpired, OSError):
            self.proc.kill()
            self.proc.wait()


class _Lines:
    """A queue seen as a text stream: `write` puts lines in, `readline` takes one out ("" = closed)."""

    def __init__(self):
        self.queue: queue.Queue[str] = queue.Queue()

    def write(self, text: str) -> None:
        self.queue.put(text)

    def flush(self) -> None:
        pass

    def readline(self) -> str:
        return self.queue.get()


class ThreadWorker:
    """The same worker code on a thread of the parent (see module docstring)."""

    measures_memory = False  # one shared process: a side's peak would be everyone's

    def __init__(self, side: str, commands: _Lines, events: _Lines, thread: threading.Thread):
        self.side, self.commands, self.events, self.thread = side, commands, events, thread

    @classmethod
    def start(cls, side: str, workdir: Path, threads: int) -> "ThreadWorker":
        from deltatune.bench.worker import serve

        commands, events = _Lines(), _Lines()

        def run() -> None:
            try:
                serve(side, Path(workdir), WorkerChannel(events, commands))
            finally:
                events.write("")  # end of stream: the parent's read() sees the worker gone

        thread = threading.Thread(target=run, name=f"bench-{side}", daemon=True)
        thread.start()
        return cls(side, commands, events, thread)

    def send(self, command: str) -> None:
        self.commands.write(command + "\n")

    def read(self) -> dict:
        while True:
            line = self.events.readline()
            if not line:
                raise WorkerFailed(self.side, "worker thread ended")
            event = _parse(self.side, line)
            if event is not None:
                return event

    def close(self, timeout: float = 30.0) -> None:
        self.commands.write("")  # a worker waiting for a command stops
        self.thread.join(timeout=timeout)
