"""Apply a fine-tuning method to a model, count what trains, merge, save, load, switch it off,
and hot-swap saved adapters over one shared base model — all through the method protocol.

    installed = apply_method(model, cfg.method, tokenizer=tok)   # freezes the base first
    trainable, total = count_parameters(model)
    save_adapter(model, cfg.method, run_dir / "adapter", base_model_path)
    load_adapter(fresh_base, run_dir / "adapter")    # re-installs the method, loads its state
    with switched_off(model): ref = model(ids)       # the base's output, no second copy
    merge_and_unload(model)                          # a plain HF model (or a clear refusal)

Serving many adapters over one base (no reload, no copy of base weights):

    handle = load_adapter_handle(base, "runs/a/adapter")
    with handle.active():                            # the adapter computes
        logits = base(ids).logits
    # here `base` is exactly the base model again

Which model carries which method is kept here (`installed_method`), so callers pass the model
only. Nothing in this file knows a method by name or kind: see `deltatune.methods.protocol`.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from pydantic import BaseModel
from torch import nn

from deltatune.errors import DeltatuneError
from deltatune.methods.adapter_files import AdapterFiles, read_adapter_files, write_adapter_files
from deltatune.methods.protocol import InstallContext, Installed, Method
from deltatune.methods.registry import get_method
from deltatune.models.device import keep_trainable_fp32

__all__ = [
    "AdapterHandle",
    "apply_method",
    "count_parameters",
    "installed_method",
    "load_adapter",
    "load_adapter_handle",
    "merge",
    "merge_and_unload",
    "save_adapter",
    "switched_off",
    "trainable_state_dict",
    "unmerge",
]

# model -> (Method, config, Installed) for the method applied by apply_method / load_adapter
_INSTALLED: weakref.WeakKeyDictionary[nn.Module, tuple[Method, BaseModel, Installed]] = weakref.WeakKeyDictionary()
_SWITCHED_OFF: weakref.WeakKeyDictionary[nn.Module, int] = weakref.WeakKeyDictionary()  # nesting depth


# ---------------------------------------------------------------------------------------------
# Apply, count, collect


def apply_method(model: nn.Module, method_cfg: BaseModel, tokenizer=None, initialise: bool = True) -> Installed:
    """Freeze every parameter, then install the method; in place. Returns the installation.

    Afterwards exactly the method's trainable tensors have requires_grad=True, in fp32 (master
    weights over a low-precision base). New modules take the model's train/eval mode. On an
    error (targets matching nothing, ...) the model is left as it was."""
    method = get_method(method_cfg)
    if model in _INSTALLED:
        raise DeltatuneError("this model already has a method installed; use merge_and_unload() or a fresh base first")
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.requires_grad_(False)
    try:
        installed = method.install(model, method_cfg, InstallContext(tokenizer=tokenizer, initialise=initialise))
    except BaseException:
        for param, flag in flags:
            param.requires_grad_(flag)
        raise
    model.train(was_training)
    keep_trainable_fp32(model)
    _INSTALLED[model] = (method, method_cfg, installed)
    if not installed.trainable():
        raise DeltatuneError(f"method {method.name!r} left no trainable parameter in {type(model).__name__}")
    return installed


def installed_method(model: nn.Module) -> tuple[Method, BaseModel, Installed]:
    """(method, config, installation) of the method on `model`; an error when there is none."""
    if model not in _INSTALLED:
        raise DeltatuneError(f"{type(model).__name__} has no method installed (apply_method or load_adapter first)")
    return _INSTALLED[model]


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter element counts; tied weights count once; a packed quantised
    weight (bitsandbytes 4-bit: two values per byte) counts the elements it stands for."""
    trainable = total = 0
    for param in model.parameters():
        n = _logical_numel(param)
        total += n
        trainable += n if param.requires_grad else 0
    return trainable, total


def _logical_numel(param: nn.Parameter) -> int:
    quant_state = getattr(param, "quant_state", None)
    shape = getattr(quant_state, "shape", None)
    return int(torch.Size(shape).numel()) if shape is not None else param.numel()


def trainable_state_dict(model: nn.Module) -> dict:
    """The installed method's state: trainable tensors and persistent buffers (not copied)."""
    return installed_method(model)[2].state()


@contextmanager
def switched_off(model: nn.Module) -> Iterator[nn.Module]:
    """The base model's function for the block (reference forwards: no second copy).

    Re-entrant: a block nested in another (a base measurement that itself asks for base
    replies) leaves the method off until the outermost block ends. A model with no method
    installed already is the base: the block runs it as it is."""
    if model not in _INSTALLED:
        yield model
        return
    installed = installed_method(model)[2]
    depth = _SWITCHED_OFF.get(model, 0)
    if depth == 0:
        installed.detach()
    _SWITCHED_OFF[model] = depth + 1
    try:
        yield model
    finally:
        _SWITCHED_OFF[model] = depth
        if depth == 0:
            del _SWITCHED_OFF[model]
            installed.attach()


# ---------------------------------------------------------------------------------------------
# Merge


def merge(model: nn.Module) -> None:
    """Fold the method's update into the base weights (reversible with `unmerge`)."""
    installed_method(model)[2].merge()


def unmerge(model: nn.Module) -> None:
    installed_method(model)[2].unmerge()


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge for good and drop the method: a plain HF model that bare `transformers` can save
    and load. A method that cannot merge raises DeltatuneError and leaves the model as it was."""
    method, _, installed = installed_method(model)
    if not method.mergeable:
        raise DeltatuneError(f"method {method.name!r} cannot be merged into the base weights; serve it unmerged")
    installed.merge_and_unload()
    del _INSTALLED[model]
    return model


# ---------------------------------------------------------------------------------------------
# Save / load


def save_adapter(model: nn.Module, method_cfg: BaseModel, out_dir: str | Path, base_model_path: str | Path) -> Path:
    """Write the method's state (not the frozen base) to `out_dir`, atomically.

    Methods with a peft twin are written in peft's layout (adapter_config.json +
    adapter_model.safetensors) that `peft.PeftModel.from_pretrained(base, out_dir)` loads;
    others as model.safetensors; always with deltatune_adapter.json. `base_model_path`: where
    the base loads from; an existing local path is written absolute, so the adapter works
    from any working directory."""
    method, _, installed = installed_method(model)
    base = Path(base_model_path)
    base_str = str(base.resolve()) if base.exists() else str(base_model_path)
    state = installed.state()
    if method.save_as is not None:  # e.g. PiSSA written as the plain LoRA it amounts to
        method_cfg, state = method.save_as(method_cfg, state)
        method = get_method(method_cfg)
    peft_cfg = method.peft.config(model, method_cfg, installed, base_str) if method.peft else None
    return write_adapter_files(out_dir, method_cfg, state, base_str, peft_cfg)


def load_adapter(model: nn.Module, adapter_dir: str | Path, tokenizer=None) -> BaseModel:
    """Install the saved method on `model` (a fresh base) and load its state; returns the
    method config. Afterwards the method's parameters are trainable, as after apply_method."""
    files = read_adapter_files(adapter_dir)
    installed = apply_method(model, files.method_cfg, tokenizer=tokenizer, initialise=False)
    try:
        installed.load_state(files.tensors, str(files.path))
    except BaseException:
        installed.detach()
        del _INSTALLED[model]
        raise
    return files.method_cfg


# ---------------------------------------------------------------------------------------------
# Hot-swappable adapters over one shared base (serving)

_ACTIVE: weakref.WeakKeyDictionary[nn.Module, AdapterHandle] = weakref.WeakKeyDictionary()
_ACTIVE_LOCK = threading.Lock()


class AdapterHandle:
    """One saved adapter installed over a shared base but switched off until `active()`.

    The base weights are never copied or modified: wrappers reference the base's own layers,
    trained base tensors are held aside and swapped in as data, hooks are added and removed.
    One handle may be active per base at a time."""

    def __init__(self, base_model: nn.Module, files: AdapterFiles):
        self.base_model = base_model
        self.path = files.path
        self.method_cfg = files.method_cfg
        self.method: Method = files.method
        self.base_model_path = files.base_model_path
        ctx = InstallContext(initialise=False, shared_base=True)
        self._installed: Installed | None = files.method.install(base_model, files.method_cfg, ctx)
        try:
            self._installed.load_state(files.tensors, str(files.path))
        finally:
            self._installed.detach()
        for param in self._installed.trainable():
            param.requires_grad_(False)

    @contextmanager
    def active(self) -> Iterator[nn.Module]:
        """Switch the adapter on for the duration of the block; yields the base model."""
        if self._installed is None:
            raise RuntimeError(f"adapter {self.path} was unloaded")
        with _ACTIVE_LOCK:
            if self.base_model in _ACTIVE:
                raise RuntimeError(f"another adapter ({_ACTIVE[self.base_model].path}) is active on this base")
            _ACTIVE[self.base_model] = self
        try:
            self._installed.attach()
            try:
                yield self.base_model
            finally:
                self._installed.detach()
        finally:
            with _ACTIVE_LOCK:
                _ACTIVE.pop(self.base_model, None)

    def unload(self) -> None:
        """Drop the adapter's weights (the server's unload); the handle is unusable afterwards."""
        if _ACTIVE.get(self.base_model) is self:
            raise RuntimeError("cannot unload an adapter while it is active")
        self._installed = None


def load_adapter_handle(base_model: nn.Module, adapter_dir: str | Path) -> AdapterHandle:
    """Read an adapter folder into a handle over `base_model` (a plain base: no method
    installed). Several handles may share one base; activate one at a time."""
    if base_model in _INSTALLED:
        raise DeltatuneError("load_adapter_handle needs a plain base model, but this one has a method installed")
    base_model.requires_grad_(False)  # a serving base never trains
    return AdapterHandle(base_model, read_adapter_files(adapter_dir))
