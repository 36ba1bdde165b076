"""Apply a fine-tuning method to a model, count and collect what trains, merge, save, load,
and hot-swap saved adapters over one shared base model.

    apply_method(model, cfg.method)                  # freezes the base, adds/unfreezes the method's params
    trainable, total = count_parameters(model)
    save_adapter(model, cfg.method, run_dir / "adapter", base_model_path)
    load_adapter(fresh_base, run_dir / "adapter")    # re-applies the method, loads its weights
    merge_and_unload(model)                          # fold LoRA into the base Linears, drop wrappers

Serving many adapters over one base (no reload, no copy of base weights):

    handle = load_adapter_handle(base, "runs/a/adapter")
    with handle.active():                            # wrappers / trained tensors swapped in
        logits = base(ids).logits
    # here `base` is exactly the base model again

How each method kind is handled is described in `deltatune.methods.registry`.
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
from deltatune.methods.modules import swap_module, wrappers
from deltatune.models.device import keep_trainable_fp32
from deltatune.methods.registry import MethodSpec, method_spec

__all__ = [
    "AdapterHandle",
    "apply_method",
    "count_parameters",
    "load_adapter",
    "load_adapter_handle",
    "merge",
    "merge_and_unload",
    "save_adapter",
    "trainable_state_dict",
    "unmerge",
]


# ---------------------------------------------------------------------------------------------
# Apply, count, collect


def apply_method(model: nn.Module, method_cfg: BaseModel) -> nn.Module:
    """Freeze every parameter, then let the method add or unfreeze its own; in place.

    Afterwards exactly the method's parameters have requires_grad=True, in fp32. New modules take the
    model's train/eval mode. Returns the model for chaining."""
    spec = method_spec(method_cfg)
    if wrappers(model):
        raise DeltatuneError("this model already has adapter layers; use merge_and_unload() or a fresh base first")
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.requires_grad_(False)
    try:
        spec.apply(model, method_cfg)  # raises on bad targets before it changes anything
    except BaseException:
        for param, flag in flags:
            param.requires_grad_(flag)
        raise
    model.train(was_training)
    keep_trainable_fp32(model)  # master weights: a bf16 base still trains fp32 adapters
    if count_parameters(model)[0] == 0:
        raise DeltatuneError(f"method {spec.name!r} left no trainable parameter in {type(model).__name__}")
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter element counts; tied weights count once."""
    trainable = total = 0
    for param in model.parameters():
        total += param.numel()
        trainable += param.numel() if param.requires_grad else 0
    return trainable, total


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """{name: tensor} of the parameters with requires_grad (detached, not copied)."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


# ---------------------------------------------------------------------------------------------
# Merge


def merge(model: nn.Module) -> None:
    """Fold every wrapper's update into its base weight (wrappers stay, forward skips them)."""
    for name, wrapper in wrappers(model).items():
        _mergeable(name, wrapper).merge()


def unmerge(model: nn.Module) -> None:
    """Undo `merge`: subtract each update from its base weight again."""
    for name, wrapper in wrappers(model).items():
        _mergeable(name, wrapper).unmerge()


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge, then put the base layers back in place of the wrappers: a plain HF model that
    bare `transformers` can save and load. A `tensors` method (full, freeze) already is one."""
    for name, wrapper in wrappers(model).items():
        _mergeable(name, wrapper).merge()
        swap_module(model, name, wrapper.base_layer)
    return model


def _mergeable(name: str, wrapper: nn.Module) -> nn.Module:
    if not callable(getattr(wrapper, "merge", None)):
        raise DeltatuneError(f"{name} ({type(wrapper).__name__}) cannot be merged into its base layer")
    return wrapper


# ---------------------------------------------------------------------------------------------
# Save / load


def save_adapter(model: nn.Module, method_cfg: BaseModel, out_dir: str | Path, base_model_path: str | Path) -> Path:
    """Write the method's weights (not the frozen base) to `out_dir`, atomically.

    LoRA: PEFT's layout (adapter_config.json + adapter_model.safetensors) that
    `peft.PeftModel.from_pretrained(base, out_dir)` loads, plus deltatune_adapter.json.
    full / freeze: the trained parameters in model.safetensors + deltatune_adapter.json.
    `base_model_path`: the folder (or hub id) the base loads from; an existing local path is
    written as an absolute path so the adapter works from any working directory."""
    spec = method_spec(method_cfg)
    base = Path(base_model_path)
    base_str = str(base.resolve()) if base.exists() else str(base_model_path)
    if spec.kind == "wrap":
        found = wrappers(model)
        if not found:
            raise DeltatuneError(f"nothing to save: the model has no {spec.name} layers (apply_method first)")
        tensors = {
            f"{name}.{pname}": p
            for name, wrapper in found.items()
            for pname, p in _own_parameters(wrapper).items()
        }
        peft_cfg = spec.to_peft(model, method_cfg, list(found), base_str) if spec.to_peft else None
        return write_adapter_files(out_dir, method_cfg, tensors, base_str, peft_cfg)
    params = dict(model.named_parameters())
    tensors = {name: params[name] for name in spec.select(model, method_cfg)}
    return write_adapter_files(out_dir, method_cfg, tensors, base_str)


def load_adapter(model: nn.Module, adapter_dir: str | Path) -> BaseModel:
    """Apply the saved method to `model` (a fresh base) and load its weights; returns the
    method config. Afterwards the method's parameters are trainable, as after apply_method."""
    files = read_adapter_files(adapter_dir)
    if wrappers(model):
        raise DeltatuneError("this model already has adapter layers; load adapters into a fresh base")
    was_training = model.training
    if files.spec.kind == "wrap":
        model.requires_grad_(False)
        for name, wrapper in _build_wrappers(model, files).items():
            swap_module(model, name, wrapper)
    else:
        apply_method(model, files.method_cfg)
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, tensor in _check_tensors(model, files).items():
                params[name].copy_(tensor)
    model.train(was_training)
    return files.method_cfg


def _own_parameters(wrapper: nn.Module) -> dict[str, nn.Parameter]:
    """A wrapper's own parameters (e.g. lora_A.weight), not its base layer's."""
    return {n: p for n, p in wrapper.named_parameters() if not n.startswith("base_layer.")}


def _build_wrappers(model: nn.Module, files: AdapterFiles) -> dict[str, nn.Module]:
    """Wrappers holding the saved tensors, around `model`'s modules, not yet installed.

    A key `<module>.<param>` belongs to the longest prefix naming a module of the base."""
    modules = dict(model.named_modules())
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in files.tensors.items():
        parts = key.split(".")
        prefixes = (".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1))
        owner = next((p for p in prefixes if p in modules), None)
        if owner is None:
            raise DeltatuneError(f"{files.path}: tensor {key!r} names no module of {type(model).__name__}")
        grouped.setdefault(owner, {})[key[len(owner) + 1 :]] = tensor
    if not grouped:
        raise DeltatuneError(f"{files.path}: the weights file holds no tensors")
    built: dict[str, nn.Module] = {}
    for name, saved in grouped.items():
        wrapper = files.spec.wrap(modules[name], files.method_cfg, name)
        own = _own_parameters(wrapper)
        if set(own) != set(saved):
            raise DeltatuneError(
                f"{files.path}: {name} has tensors {sorted(saved)}, expected {sorted(own)} for {files.spec.name}"
            )
        with torch.no_grad():
            for pname, param in own.items():
                if param.shape != saved[pname].shape:
                    raise DeltatuneError(
                        f"{files.path}: {name}.{pname} has shape {tuple(saved[pname].shape)}, "
                        f"the model needs {tuple(param.shape)} (wrong base model or rank?)"
                    )
                param.copy_(saved[pname])
        wrapper.train(model.training)
        built[name] = wrapper
    return built


def _check_tensors(model: nn.Module, files: AdapterFiles) -> dict[str, torch.Tensor]:
    """Saved trained parameters, checked against what the method selects on this model and
    cast to each parameter's dtype and device."""
    expected = files.spec.select(model, files.method_cfg)
    if set(expected) != set(files.tensors):
        missing = sorted(set(expected) - set(files.tensors))[:5]
        extra = sorted(set(files.tensors) - set(expected))[:5]
        raise DeltatuneError(
            f"{files.path}: saved tensors do not fit this model (missing {missing}, unexpected {extra}); "
            "is it the base the adapter was trained on?"
        )
    params = dict(model.named_parameters())
    out = {}
    for name in expected:
        if params[name].shape != files.tensors[name].shape:
            raise DeltatuneError(
                f"{files.path}: {name} has shape {tuple(files.tensors[name].shape)}, "
                f"the model needs {tuple(params[name].shape)}"
            )
        out[name] = files.tensors[name].to(device=params[name].device, dtype=params[name].dtype)
    return out


# ---------------------------------------------------------------------------------------------
# Hot-swappable adapters over one shared base (serving)

_ACTIVE: weakref.WeakKeyDictionary[nn.Module, AdapterHandle] = weakref.WeakKeyDictionary()
_ACTIVE_LOCK = threading.Lock()


class AdapterHandle:
    """One saved adapter, ready to swap into a shared base model and out again.

    `wrap` methods (LoRA): holds wrapper modules that reference the base's own Linears;
    activating sets them into their parents, unmerged. `tensors` methods (full, freeze): holds
    the trained tensors; activating points the base parameters' data at them. Either way the
    base weights are never copied or modified. One handle may be active per base at a time."""

    def __init__(self, base_model: nn.Module, files: AdapterFiles):
        self.base_model = base_model
        self.path = files.path
        self.method_cfg = files.method_cfg
        self.spec: MethodSpec = files.spec
        self.base_model_path = files.base_model_path
        self._wrappers: dict[str, nn.Module] = {}
        self._tensors: dict[str, torch.Tensor] = {}
        self._unloaded = False
        if self.spec.kind == "wrap":
            self._wrappers = _build_wrappers(base_model, files)
            for wrapper in self._wrappers.values():
                _own_requires_grad(wrapper, False)
        else:
            self._tensors = _check_tensors(base_model, files)

    @contextmanager
    def active(self) -> Iterator[nn.Module]:
        """Swap the adapter in for the duration of the block; yields the base model."""
        if self._unloaded:
            raise RuntimeError(f"adapter {self.path} was unloaded")
        with _ACTIVE_LOCK:
            if self.base_model in _ACTIVE:
                raise RuntimeError(f"another adapter ({_ACTIVE[self.base_model].path}) is active on this base")
            _ACTIVE[self.base_model] = self
        try:
            restore = self._swap_in()
            try:
                yield self.base_model
            finally:
                restore()
        finally:
            with _ACTIVE_LOCK:
                _ACTIVE.pop(self.base_model, None)

    def unload(self) -> None:
        """Drop the adapter's weights (the server's unload); the handle is unusable afterwards."""
        if _ACTIVE.get(self.base_model) is self:
            raise RuntimeError("cannot unload an adapter while it is active")
        self._wrappers, self._tensors, self._unloaded = {}, {}, True

    def _swap_in(self):
        """Install the adapter; returns the function that uninstalls it."""
        model = self.base_model
        if self._wrappers:
            installed: list[tuple[str, nn.Module]] = []

            def restore_modules() -> None:
                for name, wrapper in reversed(installed):
                    swap_module(model, name, wrapper.base_layer)

            try:
                for name, wrapper in self._wrappers.items():
                    if model.get_submodule(name) is not wrapper.base_layer:
                        raise RuntimeError(f"{name} of the base model changed since the adapter was loaded")
                    wrapper.train(model.training)
                    swap_module(model, name, wrapper)
                    installed.append((name, wrapper))
            except BaseException:
                restore_modules()
                raise
            return restore_modules
        params = dict(model.named_parameters())
        originals = {name: params[name].data for name in self._tensors}

        def restore_tensors() -> None:
            for name, data in originals.items():
                params[name].data = data

        for name, tensor in self._tensors.items():
            params[name].data = tensor
        return restore_tensors


def _own_requires_grad(wrapper: nn.Module, flag: bool) -> None:
    for param in _own_parameters(wrapper).values():
        param.requires_grad_(flag)


def load_adapter_handle(base_model: nn.Module, adapter_dir: str | Path) -> AdapterHandle:
    """Read an adapter folder into a handle over `base_model` (which must be a plain base:
    no adapter applied). Several handles may share one base; activate one at a time."""
    if wrappers(base_model):
        raise DeltatuneError("load_adapter_handle needs a plain base model, but this one has adapter layers")
    return AdapterHandle(base_model, read_adapter_files(adapter_dir))
