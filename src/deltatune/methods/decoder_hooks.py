"""The methods that plug in through two hooks on the decoder stack (prompt tuning, P-tuning,
prefix tuning, P-tuning v2) share this: how the hooks and the method's module are put on the
model and taken off, and how a hook reads the decoder call's arguments.

    class PromptInstall(DecoderHooksInstall):
        slot = "prompt_embeddings"
        def slot_module(self): return self.prompt
        def _before(self, decoder, args, kwargs): ...   # forward pre-hook (with_kwargs=True)
        def _after(self, decoder, args, kwargs, output): ...

Attached, the module lives on the model as attribute `slot` (so its tensors have model names:
`prompt_embeddings.weight`) and the decoder carries the two hooks; detached, both are gone and
the model computes the base. Documented torch APIs only (`register_forward_pre_hook` /
`register_forward_hook` with `with_kwargs=True`), no patched classes.
"""

from __future__ import annotations

import inspect

from torch import nn

from deltatune.errors import DeltatuneError


class DecoderHooksInstall:
    """attach / detach for a decoder-hook method (see the module docstring). Subclasses set
    `self.model` and `self._handles = []`, the class attribute `slot`, and define
    `slot_module()`, `_before` and `_after`."""

    slot: str = ""

    def slot_module(self) -> nn.Module:
        raise NotImplementedError

    def attach(self) -> None:
        if self._handles:
            return
        if hasattr(self.model, self.slot):
            raise DeltatuneError(f"{type(self.model).__name__} already has a {self.slot!r} attribute")
        decoder = self.model.get_decoder()
        self.model.add_module(self.slot, self.slot_module())
        self._handles = [
            decoder.register_forward_pre_hook(self._before, with_kwargs=True),
            decoder.register_forward_hook(self._after, with_kwargs=True),
        ]

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        if self._handles:
            delattr(self.model, self.slot)
        self._handles = []


def as_keywords(decoder: nn.Module, args: tuple, kwargs: dict, label: str) -> dict:
    """A decoder call's arguments all as keywords, positional ones by the forward's names (a
    pre-hook returns everything as keywords, so none may be dropped)."""
    if not args:
        return kwargs
    names = positional_names(decoder)
    if len(args) > len(names):
        raise DeltatuneError(f"{label}: {type(decoder).__name__} got {len(args)} positional arguments, "
                             f"its forward takes {len(names)}")
    return {**dict(zip(names, args)), **kwargs}


def positional_names(decoder: nn.Module) -> list[str]:
    """The names the decoder's forward binds positional arguments to, in order (the hook
    returns everything as keywords, so none may be dropped: `decoder(ids, mask)` keeps its mask)."""
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [n for n, p in inspect.signature(decoder.forward).parameters.items() if p.kind in kinds]


def batch_size(kwargs: dict, label: str) -> int:
    """The batch size of a decoder call, from whichever input it was given."""
    for key in ("input_ids", "inputs_embeds", "attention_mask", "position_ids"):
        if kwargs.get(key) is not None:
            return kwargs[key].shape[0]
    raise DeltatuneError(f"{label}: the decoder was called without inputs")
