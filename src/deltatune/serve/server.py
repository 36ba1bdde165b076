"""Assemble and run the server: settings, the loaded base + adapters, uvicorn.

    settings = ServeSettings(port=8000, api_key="s3cret")
    state = build_state("smollm2-135m", {"support": "runs/support"}, settings)
    state = build_state(None, {}, settings, classifiers={"intents": "runs/cls"})   # classifiers only
    serve(state)                                  # blocks, like `deltatune serve`

    handle = start_in_thread(state, port=0)       # tests and benchmarks: a real server on a free port
    ... handle.url ...                            # http://127.0.0.1:PORT
    handle.stop()

The base model is loaded once (fp32 on CPU, safetensors only, `trust_remote_code` off unless
`settings.trust_remote_code`); `--adapter NAME=RUN_DIR` adapters are loaded before the first
request is accepted, so a bad adapter fails the command at start, not at the first request.
Classifier runs (`recipe: cls`, served at POST /v1/classify: deltatune.serve.classify) load
whole, each with its own base; an `--adapter` pointing at one is served as a classifier. With
classifiers only, no generation base is needed (`base` None).
"""

from __future__ import annotations

import copy
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from deltatune.errors import DeltatuneError
from deltatune.serve.adapters import AdapterRegistry, DirectoryWatcher, NoBaseRegistry, resolve_adapter_dir, valid_name
from deltatune.serve.classify import ClassifierSet
from deltatune.serve.worker import GenerationWorker


@dataclass
class ServeSettings:
    host: str = "127.0.0.1"  # loopback unless the operator decides to expose it
    port: int = 8000
    api_key: str | None = None  # None: no auth (fine on loopback); env DELTATUNE_API_KEY sets it
    adapter_root: Path | None = None  # POST /v1/adapters paths must resolve inside; None disables it
    watch_dir: Path | None = None
    watch_interval: float = 2.0
    max_batch: int = 8
    max_queue: int = 64
    max_tokens_cap: int = 1024
    default_max_tokens: int = 256
    max_prompt_tokens: int = 4096
    max_body_bytes: int = 1_000_000
    request_timeout: float = 600.0
    trust_remote_code: bool = False
    model_name: str | None = None  # served name of the base; default: alias or folder name


class ServerState:
    """Everything the app needs: model, tokenizers, registry, worker, watcher, settings."""

    def __init__(self, model, tokenizer, base_name: str | None, settings: ServeSettings):
        self.settings = settings
        self.model, self.tokenizer = model, tokenizer
        # The HTTP side tokenises on the event-loop thread while the worker decodes: a fast
        # tokenizer's Rust state is not safe to share across threads, so each side owns a copy.
        self.http_tokenizer = copy.deepcopy(tokenizer)
        self.context_len = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        # no generation base (classifiers only): every generation request is a 404 / 400
        self.registry = AdapterRegistry(model, base_name) if model is not None else NoBaseRegistry()
        self.classifiers = ClassifierSet()
        self.worker = GenerationWorker(model, tokenizer, self.registry, settings.max_batch, settings.max_queue)
        self.watcher = None
        if settings.watch_dir is not None:
            self.watcher = DirectoryWatcher(settings.watch_dir, self.registry, self.worker.call,
                                            settings.watch_interval)
        self._started = False

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        self.worker.start()
        if self.watcher:
            self.watcher.start()

    def stop(self) -> None:
        if self.watcher:
            self.watcher.stop()
        self.worker.stop()

    def add_adapter_now(self, name: str, path: str | Path, source: str = "cli"):
        """Load an adapter before the worker runs (start-up): same code path as the worker's."""
        return self.registry.add(name, resolve_adapter_dir(path), source)


def base_display_name(name: str) -> str:
    path = Path(name)
    return path.name if path.is_dir() else name


def build_state(base: str | None, adapters: dict[str, str], settings: ServeSettings,
                classifiers: dict[str, str] | None = None) -> ServerState:
    """Load the base (alias, HF folder or hub id; None: classifiers only), the named adapters
    and the classifier runs (an adapter that is a `recipe: cls` run joins them); nothing runs yet."""
    from deltatune.classify.predictor import is_cls_run
    from deltatune.config import ModelConfig
    from deltatune.models.loader import load_causal_lm

    classifiers = dict(classifiers or {})
    for name, path in list(adapters.items()):
        if is_cls_run(path):  # a classifier run: served at /v1/classify, not over the base
            if name in classifiers:
                raise DeltatuneError(f"model name {name!r} given twice (--adapter and --classifier)")
            classifiers[name] = adapters.pop(name)
    for flag, names in (("--adapter", adapters), ("--classifier", classifiers)):
        for name in names:
            if not valid_name(name):
                raise DeltatuneError(f"{flag} name {name!r} must match [A-Za-z0-9][A-Za-z0-9_.-]{{0,63}}")
    if base is None and not classifiers:
        raise DeltatuneError("nothing to serve: give --model (a base to generate with) and/or --classifier NAME=RUN_DIR")
    if base is None and adapters:
        raise DeltatuneError(f"--adapter {', '.join(adapters)} needs a base model to sit on: add --model")
    base_name = (settings.model_name or base_display_name(base)) if base is not None else None
    taken = [n for n in classifiers if n in adapters or n == base_name]
    if base_name in adapters or taken:
        raise DeltatuneError(f"model name {(taken or [base_name])[0]!r} is used twice (base, --adapter, "
                             f"--classifier); pick another")
    model = tokenizer = None
    if base is not None:
        model, tokenizer = load_causal_lm(ModelConfig(name=base, trust_remote_code=settings.trust_remote_code))
    state = ServerState(model, tokenizer, base_name, settings)
    for name, path in adapters.items():
        state.add_adapter_now(name, path)
    for name, path in classifiers.items():
        state.classifiers.add(name, path)
    return state


def create_server(state: ServerState, host: str | None = None, port: int | None = None):
    """A uvicorn.Server for the app (not started)."""
    import uvicorn

    from deltatune.serve.app import create_app

    config = uvicorn.Config(
        create_app(state),
        host=host or state.settings.host,
        port=state.settings.port if port is None else port,
        log_level=os.environ.get("DELTATUNE_LOG_LEVEL", "warning"),
        timeout_graceful_shutdown=10,
        lifespan="on",
    )
    return uvicorn.Server(config)


def serve(state: ServerState) -> None:
    """Run until Ctrl-C, printing where the server listens and what it serves."""
    s = state.settings
    server = create_server(state)
    print(f"[deltatune serve] http://{s.host}:{s.port}/v1  models: "
          f"{', '.join(state.registry.names() + state.classifiers.names())}"
          f"{'  (API key required)' if s.api_key else ''}", flush=True)
    server.run()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ServerHandle:
    """A real server running on a background thread (tests, benchmarks, notebooks)."""

    def __init__(self, state: ServerState, host: str = "127.0.0.1", port: int = 0):
        self.state = state
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.server = create_server(state, host, self.port)
        self.thread = threading.Thread(target=self.server.run, name="deltatune-uvicorn", daemon=True)

    def start(self, timeout: float = 30.0) -> "ServerHandle":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise DeltatuneError(f"server did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.state.worker.begin_shutdown()  # new requests get 503 while open ones drain
        self.server.should_exit = True
        self.thread.join(timeout=timeout)


def start_in_thread(state: ServerState, host: str = "127.0.0.1", port: int = 0) -> ServerHandle:
    return ServerHandle(state, host, port).start()
