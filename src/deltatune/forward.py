"""The one forward path: a batch of token ids -> hidden states / logits, with the method active.

    hidden, _ = decoder_hidden(model, batch["input_ids"], batch["attention_mask"])   # training, val
    logits, cache = next_token_logits(model, ids, mask, positions, cache)            # generation
    logits = all_logits(model, ids)                                                  # export checks

Training loss, validation and perplexity, the replay teacher, generation (prefill and cached
decoding, hence the server and the evaluator) and export verification all run the model
through these functions. They call the decoder stack and then the output head; whatever method
is installed is active because it lives in the model itself (wrapper modules, or hooks on the
decoder that change its inputs — see `deltatune.methods.protocol`). Hidden states come back
aligned with the caller's tokens, whatever a method prepended.

Only the positions that need it go through the vocabulary projection (the biggest matmul of a
small model): the labelled ones in training (`deltatune.losses.lm`), the last one in decoding.
"""

from __future__ import annotations

import inspect

import torch


def _cache_kwarg(decoder) -> str:
    """transformers 5.2x renamed `past_key_values` to `cache` (old name deprecated); models
    with custom forwards may still use the old one. Drop the fallback once 5.40 is the floor."""
    params = inspect.signature(decoder.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def output_head(model):
    """The vocabulary projection (hidden -> logits) of a causal LM."""
    return model.get_output_embeddings()


def decoder_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                   position_ids: torch.Tensor | None = None, cache=None, use_cache: bool = False,
                   segments: torch.Tensor | None = None):
    """(last hidden states (B, T, H) aligned with `input_ids`, the KV cache or None).

    `cache` continues a previous call (cached decoding); `use_cache=True` starts one.
    `segments`: a packed row's (S + 1,) example boundaries (`deltatune.data.packing`; needs its
    restarting `position_ids`): no 2D mask is passed, and the boundaries go to the attention as
    `cu_seq_lens_q` / `cu_seq_lens_k` (`deltatune.training.segment_attention` runs attention per
    example; transformers' own SDPA / eager attention find the examples from the position ids)."""
    decoder = model.get_decoder()
    kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": use_cache}
    if position_ids is not None:
        kwargs["position_ids"] = position_ids
    if segments is not None:
        if position_ids is None:
            raise ValueError("a packed row (segments) needs its per-example position_ids")
        kwargs.update(attention_mask=None, cu_seq_lens_q=segments, cu_seq_lens_k=segments)
    if cache is not None or use_cache:
        kwargs[_cache_kwarg(decoder)] = cache
    out = decoder(**kwargs)
    if not use_cache:
        return out.last_hidden_state, None
    new_cache = getattr(out, "cache", None)
    if new_cache is None:  # transformers before the rename (reading it on newer ones warns)
        new_cache = getattr(out, "past_key_values", None)
    return out.last_hidden_state, new_cache


def next_token_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                      position_ids: torch.Tensor | None, cache=None):
    """(fp32 logits (B, V) of the last position, the updated KV cache): one decoding step
    (prefill when `cache` is None)."""
    hidden, cache = decoder_hidden(model, input_ids, attention_mask, position_ids, cache, use_cache=True)
    # (B, 1, H) -> (B, 1, V): the same shapes as transformers' `logits_to_keep=1`
    return output_head(model)(hidden[:, -1:, :]).float()[:, -1, :], cache


def all_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """fp32 logits (B, T, V) at every position (export verification, small inputs only)."""
    hidden, _ = decoder_hidden(model, input_ids, attention_mask)
    return output_head(model)(hidden).float()
