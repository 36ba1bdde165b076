"""Named adapters over one shared base model, and the checks that guard loading them.

    registry = AdapterRegistry(model, base_name="smollm2-135m")
    registry.add("support", resolve_adapter_dir("runs/support"), source="cli")   # worker thread
    with registry.activate("support"):     # the adapter is live (unmerged) only inside the block
        generate(model, ...)

Each adapter is an `AdapterHandle` from `deltatune.methods.core.load_adapter_handle`: the
base is loaded once and `handle.active()` swaps one adapter in for a batch and out again, so
switching adapters per request never reloads the base. `add`, `remove` and `activate` touch
the model, so only the generation worker thread calls them (`worker.call(...)`); listing
names is safe from any thread.

Safety rules for paths that come over HTTP (`checked_path`): the path must resolve — symlinks
followed — inside the operator's `--adapter-root`, and the adapter must be stored as
safetensors (pickle-based `.bin`/`.pt` files can run code on load and are refused). `watch_dir`
support lives in `DirectoryWatcher`: every subfolder holding an adapter becomes a model named
after the folder; a folder that disappears is unloaded.
"""

from __future__ import annotations

import re
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from deltatune.errors import DeltatuneError
from deltatune.serve.protocol import ADAPTER_NAME_PATTERN, APIError, model_card

NAME_RE = re.compile(ADAPTER_NAME_PATTERN)
ADAPTER_MARKERS = ("adapter_config.json", "deltatune_adapter.json")  # a peft folder / ours (any method)
UNSAFE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def valid_name(name: str) -> bool:
    return bool(NAME_RE.match(name))


def resolve_adapter_dir(path: str | Path) -> Path:
    """A run dir (config.yaml + adapter/) or an adapter dir -> the adapter dir itself.

    Raises DeltatuneError when neither layout is there or when weights are not safetensors."""
    path = Path(path)
    if not path.is_dir():
        raise DeltatuneError(f"adapter path {path} is not a directory")
    candidate = path / "adapter" if (path / "config.yaml").is_file() else path
    if not any((candidate / marker).is_file() for marker in ADAPTER_MARKERS):
        raise DeltatuneError(
            f"{path} holds no adapter: expected a run dir with adapter/ inside, or a folder with "
            f"{' or '.join(ADAPTER_MARKERS)}"
        )
    if not any(candidate.glob("*.safetensors")):
        unsafe = [p.name for p in candidate.iterdir() if p.suffix in UNSAFE_SUFFIXES]
        hint = f" (found {', '.join(unsafe)}: pickle formats are never loaded)" if unsafe else ""
        raise DeltatuneError(f"{candidate} has no .safetensors weights{hint}")
    return candidate


def checked_path(user_path: str, root: Path | None) -> Path:
    """An adapter path from an HTTP request, resolved and confined to `root` (APIError if not)."""
    if root is None:
        raise APIError(403, "loading adapters over HTTP is disabled; start the server with "
                       "--adapter-root DIR to allow paths inside DIR", code="adapter_root_unset")
    root = root.resolve()
    try:
        resolved = (root / user_path).resolve()  # an absolute user_path replaces root here
    except (OSError, ValueError) as err:  # NUL bytes, symlink loops
        raise APIError(400, f"adapter path {user_path!r} is not a usable path: {err}", param="path",
                       code="invalid_adapter") from None
    if not resolved.is_relative_to(root):
        raise APIError(403, f"adapter path {user_path!r} is outside the allowed adapter root",
                       param="path", code="path_not_allowed")
    try:
        return resolve_adapter_dir(resolved)
    except DeltatuneError as err:
        # report the path as the user gave it, not the server's absolute filesystem layout
        raise APIError(400, str(err).replace(str(resolved), user_path), param="path",
                       code="invalid_adapter") from None


@dataclass
class Adapter:
    name: str
    path: Path
    source: str  # "cli" | "api" | "watch"
    handle: Any
    created: int


def _default_loader(model, adapter_dir: Path):
    from deltatune.methods.core import load_adapter_handle

    return load_adapter_handle(model, adapter_dir)


class AdapterRegistry:
    """name -> loaded adapter over `model`. Mutating methods run on the worker thread only."""

    def __init__(self, model, base_name: str, loader: Callable = _default_loader):
        self.model = model
        self.base_name = base_name
        self.created = int(time.time())
        self._loader = loader
        self._adapters: dict[str, Adapter] = {}
        self._lock = threading.Lock()  # guards the dict for readers on other threads

    # -- readers (any thread)
    def names(self) -> list[str]:
        with self._lock:
            return [self.base_name, *self._adapters]

    def knows(self, name: str) -> bool:
        with self._lock:
            return name == self.base_name or name in self._adapters

    def source(self, name: str) -> str | None:
        with self._lock:
            entry = self._adapters.get(name)
            return entry.source if entry else None

    def cards(self) -> list[dict]:
        with self._lock:
            adapters = list(self._adapters.values())
        cards = [model_card(self.base_name, self.created)]
        cards += [model_card(a.name, a.created, parent=self.base_name, kind="adapter") for a in adapters]
        return cards

    # -- mutators (worker thread)
    def add(self, name: str, adapter_dir: Path, source: str) -> Adapter:
        if not valid_name(name):
            raise DeltatuneError(f"adapter name {name!r} is not a plain identifier "
                                 f"(letters, digits, '_', '.', '-'; at most 64 characters)")
        if self.knows(name):
            raise APIError(409, f"a model named {name!r} is already loaded; unload it first",
                           param="name", code="model_exists")
        handle = self._loader(self.model, Path(adapter_dir))
        entry = Adapter(name, Path(adapter_dir), source, handle, int(time.time()))
        with self._lock:
            self._adapters[name] = entry
        return entry

    def remove(self, name: str) -> None:
        with self._lock:
            entry = self._adapters.pop(name, None)
        if entry is None:
            raise APIError(404, f"no adapter named {name!r} is loaded", param="name", code="model_not_found")
        # handles that hold modules on the shared base give them back; others just drop weights
        unload = getattr(entry.handle, "unload", None) or getattr(entry.handle, "remove", None)
        if callable(unload):
            unload()

    def activate(self, name: str):
        """Context in which `name` (the base or an adapter) is what the model computes."""
        if name == self.base_name:
            return nullcontext()
        with self._lock:
            entry = self._adapters.get(name)
        if entry is None:
            raise APIError(404, f"model {name!r} was unloaded before this request ran",
                           param="model", code="model_not_found")
        return _active(entry.handle)


class NoBaseRegistry:
    """The registry of a server with no generation base (classifiers only): knows no model,
    loads no adapter."""

    base_name = None

    def names(self) -> list[str]:
        return []

    def knows(self, name: str) -> bool:
        return False

    def source(self, name: str) -> None:
        return None

    def cards(self) -> list[dict]:
        return []

    def add(self, name: str, adapter_dir: Path, source: str):
        raise DeltatuneError("this server has no base model to put adapters on (started without --model)")

    def remove(self, name: str) -> None:
        raise APIError(404, f"no adapter named {name!r} is loaded", param="name", code="model_not_found")

    def activate(self, name: str):
        raise APIError(404, f"the model {name!r} does not exist", param="model", code="model_not_found")


@contextmanager
def _active(handle):
    with handle.active():
        yield


class DirectoryWatcher:
    """Polls `root`: each subfolder with an adapter becomes a model named after it.

    A folder is loaded once its file listing (names, sizes, mtimes) is the same on two polls
    in a row, so a run still writing its adapter is not loaded half-written. A folder that
    fails to load is retried only after it changes. Folders that vanish are unloaded (only
    adapters this watcher added: the operator's `--adapter` ones are never touched)."""

    def __init__(self, root: Path, registry: AdapterRegistry, call: Callable, interval: float = 2.0,
                 log: Callable[[str], None] = print):
        self.root, self.registry, self.call, self.interval, self.log = Path(root), registry, call, interval, log
        self._seen: dict[str, tuple] = {}  # name -> signature at the previous poll
        self._failed: dict[str, tuple] = {}  # name -> signature that failed to load
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="deltatune-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception as err:  # a watcher that dies silently would be worse than a log line
                self.log(f"[deltatune serve] watch {self.root}: {err}")
            self._stop.wait(self.interval)

    def poll(self) -> None:
        """One scan: load stable new folders, unload vanished ones."""
        present: dict[str, tuple] = {}
        for sub in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            if sub.is_dir() and valid_name(sub.name):
                present[sub.name] = _signature(sub)
        for name, sig in present.items():
            stable = self._seen.get(name) == sig
            if stable and not self.registry.knows(name) and self._failed.get(name) != sig:
                self._load(name, self.root / name, sig)
        for name in list(self._seen):
            if name not in present and self.registry.source(name) == "watch":
                self.call(lambda n=name: self.registry.remove(n)).result()
                self.log(f"[deltatune serve] unloaded adapter {name!r} (folder removed)")
        self._seen = present

    def _load(self, name: str, folder: Path, sig: tuple) -> None:
        try:
            adapter_dir = resolve_adapter_dir(folder)
        except DeltatuneError:
            return  # not an adapter (yet): check again on the next poll
        try:
            self.call(lambda: self.registry.add(name, adapter_dir, "watch")).result()
            self.log(f"[deltatune serve] loaded adapter {name!r} from {folder}")
            self._failed.pop(name, None)
        except Exception as err:
            self._failed[name] = sig
            self.log(f"[deltatune serve] could not load adapter {name!r} from {folder}: {err}")


def _signature(folder: Path) -> tuple:
    """(relative name, size, mtime) of every file up to two levels down: changes while written."""
    entries = []
    for path in sorted(list(folder.glob("*")) + list(folder.glob("*/*"))):
        if path.is_file():
            stat = path.stat()
            entries.append((str(path.relative_to(folder)), stat.st_size, stat.st_mtime_ns))
    return tuple(entries)
