"""A fingerprint of a model's base weights: the same base gives the same digest, whatever method
is installed on it; any change to a base weight gives another.

    digest = base_weights_fingerprint(model)   # 64 hex characters (sha256)

Why: caches of what the *base* model computes (the replay answers, the base's evaluation) must
hit for the same base before and after a method is installed and trained, and miss as soon as
the base differs. Fingerprinting `model.parameters()` as they stand would mix the method's own
tensors (LoRA's A and B, prompt embeddings) into the key, and a LoRA wrapper renames its base
layer (`q_proj.weight` becomes `q_proj.base_layer.weight`).

How: with a method installed, the weights are read with the method switched off
(`deltatune.methods.core.switched_off`), so names and tensors are the base's own, and any of
the method's tensors (`Installed.state()` names) still reachable are left out. A method that
trains the base's own weights (full, freeze) has no separate base: before its first update
switching off is a no-op and the digest equals the bare model's; after training in place
there is no base left to read, so the current weights are fingerprinted (a different digest,
which is the truth: these are no longer the base weights).

The digest covers every parameter's name, dtype, shape and bytes (tied weights once). Hashing
the bytes is exact and costs ~0.35 s for SmolLM2-135M's 540 MB of fp32 on one core; sums of a
few tensors were cheaper but missed changes elsewhere in the model.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from deltatune.errors import DeltatuneError


def base_weights_fingerprint(model: nn.Module) -> str:
    """sha256 hex digest of the base weights of `model` (see the module docstring)."""
    from deltatune.methods.core import installed_method, switched_off

    try:
        method, _, installed = installed_method(model)
    except DeltatuneError:  # a bare model: all its parameters are the base
        return _digest(model.named_parameters())
    # a method that trains base tensors owns names that are base weights: keep those
    own = set() if method.trains_base_weights else set(installed.state())
    try:
        with switched_off(model):
            return _digest((n, p) for n, p in model.named_parameters() if n not in own)
    except DeltatuneError:  # trained in place: no switched-off state, the base is gone
        return _digest(model.named_parameters())


def _digest(named_tensors) -> str:
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in named_tensors:
            flat = tensor.detach().reshape(-1).contiguous().cpu()  # 1-D, so any dtype views as bytes
            digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}\n".encode())
            digest.update(memoryview(flat.view(torch.uint8).numpy()))
    return digest.hexdigest()
