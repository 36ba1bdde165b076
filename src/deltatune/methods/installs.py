"""Ready-made `Installed` implementations that most methods compose instead of rewriting.

    WrapperInstall(model, {"model.layers.0.self_attn.q_proj": LoRALinear(...), ...})
    TensorInstall(model, ["model.layers.1.mlp.up_proj.weight", ...], ctx)
    SharedSlotInstall(model, "said", params, wrappers)    # wrappers reading one shared module

`WrapperInstall`: the method swaps wrapper modules in around base layers. A wrapper keeps the
original module as `base_layer`, adds its own parameters / buffers beside it, and implements
`merge()` / `unmerge()` when its update folds into the base weight (LoRA, IA3). Switching off
swaps the base layers back; the wrappers keep their tensors.

`TensorInstall`: the method trains some of the base's own parameters (full, freeze). Trained
in place, there is no separate "base" to switch back to without a copy of it, so `detach`
refuses once the weights have changed (before the first update it is a no-op: the parameters
still hold the base, which is how a recipe measures the base after installing the method). Loaded over a shared base (serving, `ctx.shared_base`), the trained tensors are held
aside and swapped in as the parameters' data on `attach`, out again on `detach`: the base
tensors are never written.
"""

from __future__ import annotations

import torch
from torch import nn

from deltatune.errors import DeltatuneError
from deltatune.methods.modules import swap_module
from deltatune.methods.protocol import InstallContext, MethodHooks


def check_state(expected: dict[str, torch.Tensor], saved: dict[str, torch.Tensor], where: str) -> None:
    """Same names and shapes, or a DeltatuneError that says which differ."""
    if set(expected) != set(saved):
        missing = sorted(set(expected) - set(saved))[:4]
        extra = sorted(set(saved) - set(expected))[:4]
        raise DeltatuneError(
            f"{where}: saved tensors do not fit this model and method (missing {missing}, unexpected "
            f"{extra}): is it the base the adapter was trained on, with the same method config?"
        )
    for name, tensor in expected.items():
        if tuple(tensor.shape) != tuple(saved[name].shape):
            raise DeltatuneError(
                f"{where}: {name} has shape {tuple(saved[name].shape)}, the model needs "
                f"{tuple(tensor.shape)} (wrong base model, rank or size?)"
            )


def copy_state(targets: dict[str, torch.Tensor], saved: dict[str, torch.Tensor], where: str) -> None:
    """Check, then copy saved tensors into `targets` in place (cast to each target's dtype)."""
    check_state(targets, saved, where)
    with torch.no_grad():
        for name, target in targets.items():
            target.copy_(saved[name].to(device=target.device, dtype=target.dtype))


def _own_tensors(wrapper: nn.Module) -> dict[str, torch.Tensor]:
    """A wrapper's own parameters and persistent buffers, not its base layer's: the entries of
    its state_dict, read from the modules themselves (no state-dict hooks run, so a wrapper
    that FSDP2 gathered is read as the full tensors it holds, deltatune.training.fsdp)."""
    tensors: dict[str, torch.Tensor] = {}
    for prefix, module in wrapper.named_modules(remove_duplicate=False):
        if prefix == "base_layer" or prefix.startswith("base_layer."):
            continue
        dot = f"{prefix}." if prefix else ""
        tensors.update({f"{dot}{n}": p for n, p in module._parameters.items() if p is not None})
        tensors.update({f"{dot}{n}": b for n, b in module._buffers.items()
                        if b is not None and n not in module._non_persistent_buffers_set})
    return tensors


class WrapperInstall:
    """Wrapper modules swapped in over base layers (see the module docstring)."""

    def __init__(self, model: nn.Module, wrappers: dict[str, nn.Module], hooks: MethodHooks | None = None):
        self.model = model
        self.wrappers = wrappers
        self.hooks = hooks or MethodHooks()
        self.attached = False
        self.attach()

    def state(self) -> dict[str, torch.Tensor]:
        return {f"{name}.{k}": t.detach() for name, w in self.wrappers.items() for k, t in _own_tensors(w).items()}

    def load_state(self, tensors: dict[str, torch.Tensor], where: str) -> None:
        copy_state({f"{name}.{k}": t for name, w in self.wrappers.items() for k, t in _own_tensors(w).items()},
                   tensors, where)

    def trainable(self) -> list[nn.Parameter]:
        return [p for w in self.wrappers.values() for n, p in w.named_parameters()
                if not n.startswith("base_layer.") and p.requires_grad]

    def attach(self) -> None:
        if self.attached:
            return
        installed: list[str] = []
        try:
            for name, wrapper in self.wrappers.items():
                if self.model.get_submodule(name) is not wrapper.base_layer:
                    raise RuntimeError(f"{name} of the base model changed since the method was installed")
                wrapper.train(self.model.training)
                swap_module(self.model, name, wrapper)
                installed.append(name)
        except BaseException:
            for name in reversed(installed):
                swap_module(self.model, name, self.wrappers[name].base_layer)
            raise
        self.attached = True

    def detach(self) -> None:
        if not self.attached:
            return
        for name, wrapper in reversed(list(self.wrappers.items())):
            swap_module(self.model, name, wrapper.base_layer)
        self.attached = False

    def merge(self) -> None:
        for name, wrapper in self.wrappers.items():
            _mergeable(name, wrapper).merge()

    def unmerge(self) -> None:
        for name, wrapper in self.wrappers.items():
            _mergeable(name, wrapper).unmerge()

    def merge_and_unload(self) -> None:
        self.merge()
        self.detach()  # the base layers now hold the merged weights


def _mergeable(name: str, wrapper: nn.Module) -> nn.Module:
    if not callable(getattr(wrapper, "merge", None)):
        raise DeltatuneError(f"{name} ({type(wrapper).__name__}) cannot be merged into its base layer")
    return wrapper


class TensorInstall:
    """Some of the base's own parameters train (see the module docstring)."""

    def __init__(self, model: nn.Module, names: list[str], ctx: InstallContext, hooks: MethodHooks | None = None):
        self.model, self.names = model, list(names)
        self.params  # every name is a parameter of the model (a KeyError otherwise)
        self.shared = ctx.shared_base
        self.hooks = hooks or MethodHooks()
        self._held: dict[str, torch.Tensor] | None = None  # shared base: the trained tensors
        self._base: dict[str, torch.Tensor] | None = None  # shared base: the base's own data
        self.attached = True
        for param in self.params.values():
            param.requires_grad_(True)
        # the tensors and their in-place version counters at install: the same tensor, unchanged
        # -> the parameters still hold the base
        self._versions = {name: (id(p), p._version) for name, p in self.params.items()}

    @property
    def params(self) -> dict[str, nn.Parameter]:
        """The trained parameters, looked up on the model each time: a wrapper that replaces
        parameter objects (FSDP2's sharding, deltatune.training.fsdp) is followed."""
        return {name: self.model.get_parameter(name) for name in self.names}

    def state(self) -> dict[str, torch.Tensor]:
        return {name: p.detach() for name, p in self.params.items()}

    def load_state(self, tensors: dict[str, torch.Tensor], where: str) -> None:
        if not self.shared:
            copy_state(dict(self.params), tensors, where)
            return
        check_state(dict(self.params), tensors, where)
        self.detach()
        self._base = {name: p.data for name, p in self.params.items()}
        self._held = {name: tensors[name].to(device=p.device, dtype=p.dtype) for name, p in self.params.items()}
        self.attached = False
        self.attach()

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.params.values() if p.requires_grad]

    def attach(self) -> None:
        if self.attached or self._held is None:
            self.attached = True
            return
        for name, param in self.params.items():
            param.data = self._held[name]
        self.attached = True

    def detach(self) -> None:
        if not self.attached:
            return
        if self._base is None:
            if self.shared or self._untouched():  # nothing swapped in / trained yet: already the base
                self.attached = False
                return
            raise DeltatuneError(
                "this method trains the base weights in place, so the model has no switched-off state; "
                "keep a frozen copy of the base for reference forwards (or use a PEFT method)"
            )
        for name, param in self.params.items():
            param.data = self._base[name]
        self.attached = False

    def _untouched(self) -> bool:
        return all((id(p), p._version) == self._versions[name] for name, p in self.params.items())

    def merge(self) -> None:
        """Nothing to fold: the trained tensors already are the model's weights."""

    def unmerge(self) -> None:
        """Nothing to unfold (see merge)."""

    def merge_and_unload(self) -> None:
        self.attach()  # the model keeps the trained weights as its own


class SharedSlotInstall:
    """Wrappers over the targets (swapped like any `WrapperInstall`) that all read one method
    module living on the model as attribute `slot` while attached (FISH Mask's sparse delta,
    SAID's theta and lambdas). Subclasses add `state` / `load_state` / `trainable` / hooks;
    attaching adds the slot, detaching removes it, merging is the wrappers'."""

    def __init__(self, model: nn.Module, slot: str, shared: nn.Module, wrappers: dict[str, nn.Module]):
        self.model, self.slot, self.shared, self.wrappers = model, slot, shared, wrappers
        self.swaps = WrapperInstall(model, wrappers)
        self._add_slot()

    def _add_slot(self) -> None:
        if getattr(self.model, self.slot, None) is not self.shared:
            self.model.add_module(self.slot, self.shared)

    def attach(self) -> None:
        self.swaps.attach()
        self._add_slot()

    def detach(self) -> None:
        self.swaps.detach()
        if getattr(self.model, self.slot, None) is self.shared:
            delattr(self.model, self.slot)

    def merge(self) -> None:
        self.swaps.merge()

    def unmerge(self) -> None:
        self.swaps.unmerge()

    def merge_and_unload(self) -> None:
        self.merge()
        self.detach()  # the base layers hold the merged weights; the shared module leaves the model
