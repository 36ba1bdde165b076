"""The generation worker: one thread owns the model; requests reach it through a bounded queue.

    worker = GenerationWorker(model, tokenizer, registry, max_batch=8, max_queue=64)
    worker.start()
    job = Job("smollm2-135m", prompt_ids, SamplingParams(32), loop=asyncio.get_running_loop())
    worker.submit(job)                 # QueueFull -> HTTP 429, ShuttingDown -> HTTP 503
    kind, value = await job.events.get()   # ("delta", text)* then ("done", Completion) | ("error", exc)

Why one thread: a torch model is not safe to run from several threads at once, and adapter
swapping mutates it, so every touch of the model — generation, loading and unloading
adapters (`call`) — happens here, in order. Why batches share a model name: the adapter is
swapped in for the whole batch, so requests for different adapters cannot share one forward
pass; the oldest waiting request decides the batch's model (no starvation), and every waiting
request for that same model joins it, up to `max_batch`. Results go back to each request's
asyncio queue with `loop.call_soon_threadsafe` (asyncio queues are not thread-safe).

A request whose client went away is flagged `cancelled`; it is dropped if still queued. Once
it is in a running batch it finishes (the batch cannot lose a row mid-step from outside) and
its output is discarded — `max_tokens` bounds that waste.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from deltatune.generation import SamplingParams, generate


class QueueFull(Exception):
    """The request queue is at `max_queue`: the client should retry later (429)."""


class ShuttingDown(Exception):
    """The server is stopping and takes no new work (503)."""


@dataclass
class Job:
    model: str  # base name or adapter name: what the batch activates
    prompt_ids: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    stream: bool = False  # only streamed jobs get per-token ("delta", text) events
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: bool = False
    enqueued: float = field(default_factory=time.monotonic)

    def post(self, kind: str, value: Any) -> None:
        """Hand an event to the request's coroutine, from the worker thread."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            self.cancelled = True


class GenerationWorker:
    def __init__(self, model, tokenizer, registry, max_batch: int = 8, max_queue: int = 64,
                 generate_fn: Callable = generate):
        self.model, self.tokenizer, self.registry = model, tokenizer, registry
        self.max_batch, self.max_queue = max_batch, max_queue
        self._generate = generate_fn
        self._jobs: deque[Job] = deque()
        self._controls: deque[tuple[Callable, concurrent.futures.Future]] = deque()
        self._cv = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="deltatune-generate", daemon=True)
        self.stats = {"batches": 0, "requests": 0, "max_batch_seen": 0, "rejected_full": 0}

    # -- called from other threads
    def start(self) -> None:
        self._thread.start()

    @property
    def closing(self) -> bool:
        return self._closing

    def queued(self) -> int:
        with self._cv:
            return len(self._jobs)

    def submit(self, job: Job) -> None:
        with self._cv:
            if self._closing:
                raise ShuttingDown()
            if len(self._jobs) >= self.max_queue:
                self.stats["rejected_full"] += 1
                raise QueueFull()
            self._jobs.append(job)
            self._cv.notify()

    def call(self, fn: Callable[[], Any]) -> concurrent.futures.Future:
        """Run `fn` on the worker thread between batches (adapter load/unload); its Future."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._cv:
            if self._closing:
                raise ShuttingDown()
            self._controls.append((fn, future))
            self._cv.notify()
        return future

    def begin_shutdown(self) -> None:
        """Refuse new work from now on; queued jobs are answered with ShuttingDown."""
        with self._cv:
            self._closing = True
            self._cv.notify()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the running batch, fail everything still queued, join the thread."""
        self.begin_shutdown()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)

    # -- the worker thread
    def _run(self) -> None:
        while True:
            with self._cv:
                while not (self._jobs or self._controls or self._closing):
                    self._cv.wait()
                if self._closing:
                    leftovers, self._jobs = list(self._jobs), deque()
                    controls, self._controls = list(self._controls), deque()
                    break
                control = self._controls.popleft() if self._controls else None
                batch = [] if control else self._next_batch()
            if control:
                _run_control(*control)
            elif batch:
                self._run_batch(batch)
        for job in leftovers:
            job.post("error", ShuttingDown())
        for _, future in controls:
            future.set_exception(ShuttingDown())

    def _next_batch(self) -> list[Job]:
        """Pop the oldest live job plus every queued job for the same model (cv held)."""
        while self._jobs and self._jobs[0].cancelled:
            self._jobs.popleft()
        if not self._jobs:
            return []
        first = self._jobs.popleft()
        batch, rest = [first], deque()
        for job in self._jobs:
            if job.cancelled:
                continue
            if job.model == first.model and len(batch) < self.max_batch:
                batch.append(job)
            else:
                rest.append(job)
        self._jobs = rest
        return batch

    def _run_batch(self, batch: list[Job]) -> None:
        def on_token(i: int, delta: str) -> None:
            if batch[i].stream and not batch[i].cancelled:
                batch[i].post("delta", delta)

        self.stats["batches"] += 1
        self.stats["requests"] += len(batch)
        self.stats["max_batch_seen"] = max(self.stats["max_batch_seen"], len(batch))
        try:
            with self.registry.activate(batch[0].model):
                completions = self._generate(
                    self.model, self.tokenizer, [j.prompt_ids for j in batch], [j.params for j in batch],
                    on_token=on_token,
                )
        except Exception as err:  # the worker must outlive any one bad batch
            for job in batch:
                job.post("error", err)
            return
        for job, completion in zip(batch, completions):
            job.post("done", completion)


def _run_control(fn: Callable, future: concurrent.futures.Future) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(fn())
    except BaseException as err:  # handed to the caller, who turns it into an HTTP error
        future.set_exception(err)
