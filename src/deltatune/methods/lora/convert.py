"""A LoRA-family adapter that started from B0 A0 != 0 (PiSSA, OLoRA) -> the plain LoRA it amounts to.

    cfg2, state2 = start_product_to_rank_2r(cfg, installed.state())   # the lora METHOD's save_as

A layer initialised by PiSSA or OLoRA (`deltatune.methods.lora.init`) computes, after training,

    h = W0 x + s (B A - B0 A0) x

and the difference of two rank-r products is one product of rank 2r (the PiSSA-to-LoRA
conversion of Meng et al. 2024, arXiv:2404.02948):

    B A - B0 A0 = [B | -B0] [A ; A0]        A' = cat([A, A0])      (2r, in)
                                            B' = cat([B, -B0], 1)  (out, 2r)

So the finished adapter is written as a plain LoRA of rank 2r that applies to the ORIGINAL,
unmodified base: peft, vLLM or any LoRA loader serves it, several such adapters share one base,
and merging it gives the fine-tuned weights. alpha changes so the scaling stays s:
alpha / r = 2 alpha / 2r, and with rsLoRA alpha / sqrt(r) = sqrt(2) alpha / sqrt(2r). peft's
`save_pretrained(path_initial_model_for_weight_conversion=...)` writes the same tensors.

Generic over the LoRA family: any state whose wrapped layers carry `lora_A0` / `lora_B0`
buffers beside `lora_A.weight` / `lora_B.weight` (LoRA, DoRA, QLoRA); other tensors (a DoRA
magnitude) pass through untouched. A state without start products comes back unchanged.
Checkpoints never go through this: they keep the method's own state, so a resumed run keeps
training A and B of rank r.
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel

START_A, START_B = "lora_A0", "lora_B0"
_A, _B = "lora_A.weight", "lora_B.weight"
State = dict[str, torch.Tensor]  # a method's state: model-relative name -> tensor


def start_product_to_rank_2r(cfg: BaseModel, state: State) -> tuple[BaseModel, State]:
    """(config, state) of the plain rank-2r LoRA equal to an adapter that subtracts B0 A0
    (see the module docstring); (cfg, state) themselves when no layer has a start product."""
    layers = [name[: -len(START_A) - 1] for name in state if name.endswith("." + START_A)]
    if not layers:
        return cfg, state
    adapted = [name[: -len(_A) - 1] for name in state if name.endswith("." + _A)]
    if sorted(adapted) != sorted(layers):
        missing = sorted(set(adapted) - set(layers))[:3]
        raise ValueError(f"some LoRA layers have no start product B0 A0 (e.g. {missing}): cannot convert a mixed state")
    converted = {k: v for k, v in state.items() if not k.endswith(("." + START_A, "." + START_B))}
    for layer in layers:
        a, b = state[f"{layer}.{_A}"], state[f"{layer}.{_B}"]  # (r, in), (out, r)
        a0, b0 = state[f"{layer}.{START_A}"], state[f"{layer}.{START_B}"]
        converted[f"{layer}.{_A}"] = torch.cat([a, a0.to(a.dtype)], dim=0)  # (2r, in)
        converted[f"{layer}.{_B}"] = torch.cat([b, -b0.to(b.dtype)], dim=1)  # (out, 2r)
    alpha = cfg.alpha * (math.sqrt(2.0) if cfg.rslora else 2.0)  # same scaling at rank 2r
    plain = type(cfg).model_validate({**cfg.model_dump(), "r": 2 * cfg.r, "alpha": alpha, "init": "default"})
    return plain, converted
