"""The classifier: a backbone (encoder or causal LM), a pooling of its hidden states, a K-way head.

    model, tokenizer, encoder = load_backbone(cfg)                  # as the method wants it stored
    pooling = resolve_pooling(cfg.classify.pooling, encoder)        # "mean" | "first" | "last"
    head = attach_linear_head(model, HEAD, len(labels), seed)       # deltatune.models.heads
    logits = class_logits(model, head, ids, mask, pooling)          # (B, K) fp32

Both kinds go through the one forward path (`deltatune.forward.decoder_hidden`): a causal LM's
decoder stack, or a bare encoder, which is its own stack (`get_decoder()` returns the model),
so wrapper methods and the input / KV-cache hook methods act wherever they are installed.
Rows are right-padded; every pooling reads the attention mask, never the pad ids.
"""

from __future__ import annotations

import torch

from deltatune.errors import DeltatuneError
from deltatune.forward import decoder_hidden
from deltatune.models.heads import last_positions

HEAD = "classifier_head"  # the head's attribute on the model (its tensors: classifier_head.weight / .bias)
HEAD_FILE = "classifier_head.safetensors"  # in the run dir, beside adapter/ and labels.json


def resolve_pooling(pooling: str, encoder: bool) -> str:
    """`classify.pooling` with auto decided: mean for an encoder, last for a decoder."""
    if pooling == "auto":
        return "mean" if encoder else "last"
    return pooling


def load_backbone(cfg):
    """(model, tokenizer, is_encoder) for `cfg.model`, stored in the dtype the precision policy
    gives the method (fp32 master weights when it trains base weights). A causal LM loads as the
    other recipes load it (a method's own `load_base`, e.g. QLoRA's quantised base, included);
    an encoder loads bare (deltatune.models.loader.load_encoder), and a method that quantises
    as it installs does so there."""
    from deltatune.methods.registry import get_method
    from deltatune.models.device import check_training_precision, resolve_device, storage_dtype
    from deltatune.models.loader import is_encoder, load_encoder
    from deltatune.recipes.common import load_for_training

    from deltatune.classify.predictor import is_cls_run

    if is_cls_run(cfg.model.name):
        raise DeltatuneError(f"model.name {cfg.model.name} is a classifier run; a cls run cannot be the base of "
                             f"another run: point model.name at its base ({_base_of(cfg.model.name)})")
    if not is_encoder(cfg.model):
        model, tokenizer = load_for_training(cfg)
        return model, tokenizer, False
    device = resolve_device(cfg.model.device)
    check_training_precision(cfg.model.dtype, device)
    dtype = storage_dtype(cfg.model.dtype, get_method(cfg.method).trains_base_weights)
    model, tokenizer = load_encoder(cfg.model, device=device, dtype=dtype)
    return model, tokenizer, True


def _base_of(run_dir) -> str:
    from deltatune.config import load_run_config

    return load_run_config(run_dir).model.name


def load_backbone_for_inference(cfg, device: str = "cpu"):
    """(model, tokenizer, is_encoder) of a finished run's base, in `cfg.model.dtype` on `device`
    (the adapter and head are put on by deltatune.classify.predictor)."""
    from deltatune.models.loader import is_encoder, load_causal_lm, load_encoder

    if is_encoder(cfg.model):
        return (*load_encoder(cfg.model, device=device), True)
    return (*load_causal_lm(cfg.model, device=device), False)


def sequence_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, H) final hidden states, with the method active."""
    hidden, _ = decoder_hidden(model, input_ids, attention_mask)
    return hidden


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, H) one vector per row: the mean over its real tokens, its first, or its last real token."""
    mask = attention_mask.to(hidden.device)
    if pooling == "mean":
        weights = mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
    if pooling == "first":
        return hidden[:, 0]
    if pooling == "last":
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return hidden[rows, last_positions(mask)]
    raise DeltatuneError(f"classify.pooling {pooling!r}: use mean, first, last or auto")


def class_logits(model, head, input_ids: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, K) fp32 class logits: the head over each row's pooled final hidden state."""
    pooled = pool(sequence_hidden(model, input_ids, attention_mask), attention_mask, pooling)
    return head(pooled.float())
