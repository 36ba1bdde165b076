"""Prefix tuning (Li & Liang 2021): trained key/value prefixes in front of every attention
layer, by default through the paper's MLP reparameterisation (folded away when saved).

    method: {name: prefix, num_virtual_tokens: 10}
    from deltatune.methods.prefix import METHOD

The layer code (`layer.py`) is shared with P-tuning v2 (`deltatune.methods.ptuning_v2`), which
is the same prefix trained as a table.
"""

from __future__ import annotations

import torch
from pydantic import ValidationError
from torch import nn

from deltatune.errors import DeltatuneError
from deltatune.methods.prefix.config import PrefixConfig
from deltatune.methods.prefix.layer import SLOT, KvGeometry, PrefixEncoder, PrefixInstall, folded_table
from deltatune.methods.prefix.peft_format import TABLE, check_plain_layout, from_key, peft_adapter_config, to_key
from deltatune.methods.protocol import InstallContext, Method, PeftTwin

__all__ = ["METHOD", "PrefixConfig", "PrefixEncoder", "PrefixInstall", "fold_projection", "install_kv_prefix"]


def install_kv_prefix(model: nn.Module, num_tokens: int, hidden: int | None, ctx: InstallContext,
                      label: str, init_text: str | None = None) -> PrefixInstall:
    """A prefix of `num_tokens` key/value pairs in every layer of `model` (its decoder gets the
    two hooks); `hidden`: the reparameterising MLP's width, None for a plain table; `init_text`:
    start from the base model's own keys/values of that text (`text_key_values`)."""
    if not callable(getattr(model, "get_decoder", None)) or model.get_input_embeddings() is None:
        raise DeltatuneError(f"{label} needs a decoder model with input embeddings; got {type(model).__name__}")
    if hasattr(model, SLOT):
        raise DeltatuneError(f"this model already carries a prefix ({SLOT})")
    try:
        geometry = KvGeometry.of_model(model)
    except (AttributeError, TypeError) as err:
        raise DeltatuneError(f"{label}: cannot read the attention geometry of {type(model).__name__}: {err}") from None
    encoder = PrefixEncoder(num_tokens, geometry, hidden)
    if not ctx.initialise:  # about to be loaded: skip drawing random values
        for param in encoder.parameters():
            nn.init.zeros_(param)
    encoder = encoder.to(model.get_input_embeddings().weight.device)
    if ctx.initialise and init_text is not None:
        encoder.start_at(text_key_values(model, geometry, num_tokens, init_text, ctx.tokenizer))
    return PrefixInstall(model, encoder, label)


def text_key_values(model: nn.Module, geometry: KvGeometry, num_tokens: int, text: str, tokenizer) -> torch.Tensor:
    """(P, layers * 2 * kv_width): the KV cache the base model builds for `text`'s tokens
    (repeated to fill P, as prompt tuning's init_text), at positions 0..P-1 — where the prefix
    sits, since the real tokens' positions are shifted by P — in the table's layout."""
    if tokenizer is None:
        raise DeltatuneError("method.init_text needs the tokenizer at install time (pass tokenizer= to apply_method)")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids or len(ids) > num_tokens:
        raise DeltatuneError(f"method.init_text is {len(ids)} tokens long but method.num_virtual_tokens is "
                             f"{num_tokens}: use a non-empty text of at most {num_tokens} tokens, or more virtual tokens")
    ids = (ids * (num_tokens // len(ids) + 1))[:num_tokens]
    device = model.get_input_embeddings().weight.device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            cache = model(input_ids=torch.tensor([ids], device=device), use_cache=True).past_key_values
    finally:
        model.train(was_training)
    g = geometry
    layers = [torch.stack([cache.layers[i].keys[0], cache.layers[i].values[0]]) for i in range(g.layers)]
    kv = torch.stack(layers)  # (layers, 2, kv_heads, P, head_dim)
    return kv.permute(3, 0, 1, 2, 4).reshape(num_tokens, g.flat).float()  # (P, layers, 2, kv_heads, head_dim)


def install_prefix(model: nn.Module, cfg: PrefixConfig, ctx: InstallContext) -> PrefixInstall:
    hidden = None
    if cfg.prefix_projection:
        hidden = cfg.encoder_hidden_size or KvGeometry.of_model(model).width  # peft's default width
    return install_kv_prefix(model, cfg.num_virtual_tokens, hidden, ctx, "prefix tuning", cfg.init_text)


def fold_projection(cfg: PrefixConfig, state: dict) -> tuple[PrefixConfig, dict]:
    """What an adapter folder keeps (`Method.save_as`): a reparameterised prefix as the table
    its MLP computes, under `prefix_projection: false` (as peft saves it); a table as it is."""
    if not cfg.prefix_projection:
        return cfg, state
    return cfg.model_copy(update={"prefix_projection": False, "encoder_hidden_size": None}), {TABLE: folded_table(state)}


def config_from_peft(raw: dict, where: str) -> PrefixConfig:
    """A peft PREFIX_TUNING config with `prefix_projection: true` -> ours, folded (peft saved
    only the MLP's output)."""
    try:
        return PrefixConfig(num_virtual_tokens=check_plain_layout(raw, where), prefix_projection=False)
    except ValidationError as err:
        raise DeltatuneError(f"{where}: not a usable prefix-tuning config: {err}") from None


METHOD = Method(
    name="prefix",
    capacity_hint="more virtual tokens (method.num_virtual_tokens) or a method with more capacity (lora)",
    config_cls=PrefixConfig,
    install=install_prefix,
    mergeable=False,
    peft=PeftTwin("PREFIX_TUNING", peft_adapter_config, config_from_peft, to_key, from_key,
                  accepts=lambda raw: raw.get("prefix_projection") is True),
    summary="trained key/value prefixes in every attention layer, MLP-reparameterised (Li & Liang 2021)",
    save_as=fold_projection,
)
