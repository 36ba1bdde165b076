"""Prompt tuning (Lester et al. 2021): trainable virtual-token embeddings before every input.

    method: {name: prompt, num_virtual_tokens: 20, init_text: "Answer about Veltrane Robotics."}
    from deltatune.methods.prompt import METHOD
"""

from __future__ import annotations

import torch
from torch import nn

from deltatune.errors import DeltatuneError
from deltatune.methods.prompt.config import PromptConfig
from deltatune.methods.prompt.layer import SLOT, PromptEmbeddings, PromptInstall
from deltatune.methods.prompt.peft_format import config_from_peft, peft_adapter_config
from deltatune.methods.protocol import InstallContext, Method, PeftTwin

__all__ = ["METHOD", "PromptConfig", "PromptEmbeddings", "initial_prompt", "install_prompt"]


def initial_prompt(model: nn.Module, cfg: PromptConfig, ctx: InstallContext) -> torch.Tensor:
    """(P, H) starting embeddings as `cfg.init_kind` says; the random kinds draw from torch's
    global generator (seeded by the recipe), so a seed reproduces them."""
    table = model.get_input_embeddings().weight.detach()  # (V, H)
    n = cfg.num_virtual_tokens
    if not ctx.initialise:
        return torch.zeros(n, table.shape[1])
    kind = cfg.init_kind
    if kind == "random":
        return torch.randn(n, table.shape[1]) * table.float().std().cpu()
    if kind == "vocab":
        ids = torch.randint(0, table.shape[0], (n,))
        return table[ids.to(table.device)].float().cpu()
    if ctx.tokenizer is None:
        raise DeltatuneError("method.init_text needs the tokenizer at install time (pass tokenizer= to apply_method)")
    ids = ctx.tokenizer(cfg.init_text, add_special_tokens=False)["input_ids"]
    if len(ids) > n:
        raise DeltatuneError(
            f"method.init_text is {len(ids)} tokens long but method.num_virtual_tokens is {n}: "
            f"shorten the text or set num_virtual_tokens >= {len(ids)}"
        )
    repeated = (ids * (n // len(ids) + 1))[:n]  # repeated to fill every virtual token, as peft does
    return table[torch.tensor(repeated, device=table.device)].float().cpu()


def install_prompt(model: nn.Module, cfg: PromptConfig, ctx: InstallContext) -> PromptInstall:
    """Virtual tokens before every input of `model` (its decoder gets the two hooks)."""
    if not callable(getattr(model, "get_decoder", None)) or model.get_input_embeddings() is None:
        raise DeltatuneError(f"prompt tuning needs a decoder model with input embeddings; got {type(model).__name__}")
    if hasattr(model, SLOT):
        raise DeltatuneError(f"this model already carries prompt embeddings ({SLOT})")
    table = model.get_input_embeddings().weight
    prompt = PromptEmbeddings(initial_prompt(model, cfg, ctx)).to(table.device)
    return PromptInstall(model, prompt)


METHOD = Method(
    name="prompt",
    capacity_hint="more virtual tokens (method.num_virtual_tokens) or a method with more capacity (lora)",
    config_cls=PromptConfig,
    install=install_prompt,
    mergeable=False,
    peft=PeftTwin("PROMPT_TUNING", peft_adapter_config, config_from_peft,
                  to_key=lambda name: "prompt_embeddings", from_key=lambda key: f"{SLOT}.weight"),
    summary="trainable virtual-token embeddings before the input (Lester et al. 2021)",
)
