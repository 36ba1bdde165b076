"""Delta-LoRA on a model: LoRA wrappers whose base weights are part of the method's state.

    installed = DeltaLoraInstall(model, {"model.layers.0.self_attn.q_proj": DeltaLoRALinear(...)}, ctx, hooks)
    installed.state()   # lora_A/B.weight, lora_A/B_prev, and every target's base_layer.weight

Composes the two ready-made installations (deltatune.methods.installs):

- `WrapperInstall` swaps the `DeltaLoRALinear` wrappers in and out (A, B, the previous A, B);
- `TensorInstall` over the targets' `base_layer.weight`: saved and loaded with the method, and
  over a shared base (serving) held aside and swapped in as data on `attach`, out on `detach`,
  so the shared base tensors are never written. These weights do not require grad: the
  after-step hook moves them, not the optimiser (no gradient, no AdamW moments).

Switching off: the base weights train in place (after the warm-up), so like `full` there is
no switched-off state once trained — `detach` refuses as soon as any of the method's tensors
changed since install (A or B too, so the answer does not depend on whether the run got past
`delta_warmup`). Before the first step it swaps the wrappers out: the recipe measures the base
that way. Over a shared base it always works.
"""

from __future__ import annotations

import torch
from torch import nn

from deltatune.errors import DeltatuneError
from deltatune.methods.installs import TensorInstall, WrapperInstall, check_state
from deltatune.methods.protocol import InstallContext, MethodHooks

NO_SWITCHED_OFF = (
    "delta_lora trains the targets' base weights in place, so the model has no switched-off state once "
    "trained; keep a frozen copy of the base for reference forwards (or use method.name=lora)"
)


class DeltaLoraInstall:
    """LoRA wrappers + their base weights as state (see the module docstring)."""

    def __init__(self, model: nn.Module, wrappers: dict[str, nn.Module], ctx: InstallContext, hooks: MethodHooks):
        self.hooks = hooks
        self.shared = ctx.shared_base
        self.lora = WrapperInstall(model, wrappers)  # swapped in: base weights are `<target>.base_layer.weight`
        self.weights = TensorInstall(model, [f"{name}.base_layer.weight" for name in wrappers], ctx)
        for weight in self.weights.params.values():
            weight.requires_grad_(False)  # moved by the after-step hook only
        self._versions = self._tensor_versions()  # in-place counters at install: all unchanged = untrained

    @property
    def wrappers(self) -> dict[str, nn.Module]:
        return self.lora.wrappers

    def _tensor_versions(self) -> list[int]:
        return [t._version for t in self.state().values()]

    def state(self) -> dict[str, torch.Tensor]:
        return {**self.lora.state(), **self.weights.state()}

    def load_state(self, tensors: dict[str, torch.Tensor], where: str) -> None:
        check_state(self.state(), tensors, where)  # every name and shape, before anything is copied
        self.lora.load_state({k: v for k, v in tensors.items() if k not in self.weights.params}, where)
        self.weights.load_state({k: v for k, v in tensors.items() if k in self.weights.params}, where)

    def trainable(self) -> list[nn.Parameter]:
        return self.lora.trainable()  # A and B; the base weights follow them

    def attach(self) -> None:
        self.lora.attach()
        self.weights.attach()

    def detach(self) -> None:
        if not self.shared and self._tensor_versions() != self._versions:
            raise DeltatuneError(NO_SWITCHED_OFF)
        self.weights.detach()  # shared base: the base's own data back in
        self.lora.detach()

    def merge(self) -> None:
        """W += s B A on every target (the updated W: Delta-LoRA's W plus LoRA's branch)."""
        self.lora.merge()

    def unmerge(self) -> None:
        self.lora.unmerge()

    def merge_and_unload(self) -> None:
        self.lora.merge_and_unload()  # the base layers keep W + s B A; the wrappers leave
