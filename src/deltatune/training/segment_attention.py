"""Causal attention run per segment of a packed row, registered with transformers' attention
interfaces: what makes padding-free packing (`deltatune.data.packing`) cost sum(len_i^2), not
(sum len_i)^2.

    use_segment_attention(model)      # once, before training with train.packing
    hidden, _ = decoder_hidden(model, ids, None, positions, segments=batch["cu_seq_lens"])

transformers (v5) looks a model's attention up by `config._attn_implementation` in
`AttentionInterface` and its mask builder in `AttentionMaskInterface`; both take registered
functions (https://huggingface.co/docs/transformers/en/attention_interface). Registered here
under `SEGMENT_ATTENTION`:

- the attention function: given `cu_seq_lens_q` (the keyword transformers' varlen flash
  attention reads too) and no mask, it runs `scaled_dot_product_attention(is_causal=True)` on
  each segment's queries / keys / values; given no boundaries but restarting position ids (any
  batch size) it finds each row's segments from them; anything else (a padded batch with its mask, cached decoding)
  goes to transformers' own SDPA function unchanged, so validation and generation compute
  exactly what they computed before;
- the mask builder: transformers' SDPA mask, except that a call with no 2D mask, no cache
  offset and full causal attention builds nothing (transformers would build a (T, T) block mask
  for a packed row; the attention function needs none).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SEGMENT_ATTENTION = "deltatune_segments"


def _segment_bounds(cu_seq_lens: torch.Tensor) -> list[tuple[int, int]]:
    edges = cu_seq_lens.tolist()
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _bounds_from_positions(positions: torch.Tensor) -> list[tuple[int, int]] | None:
    """Segments of one row whose position ids restart (0 1 2 0 1 -> [(0, 3), (3, 5)]), else None."""
    starts = (torch.nonzero(positions[1:] != positions[:-1] + 1).flatten() + 1).tolist()
    if not starts:
        return None
    edges = [0, *starts, positions.shape[0]]
    return list(zip(edges[:-1], edges[1:]))


def _row_segments(batch: int, length: int, cu_seq_lens, position_ids) -> list[list[tuple[int, int]]] | None:
    """Each row's [start, end) segments, or None when no row holds more than one sequence: from
    `cu_seq_lens` for one packed row, else from restarting position ids (any batch size)."""
    if cu_seq_lens is not None and batch == 1:
        return [_segment_bounds(cu_seq_lens)]
    if position_ids is None or position_ids.shape[-1] != length:
        return None
    rows = [_bounds_from_positions(row) for row in position_ids.expand(batch, -1)]
    if all(bounds is None for bounds in rows):
        return None
    return [bounds or [(0, length)] for bounds in rows]


@torch.compiler.disable  # a Python loop over data-dependent segments: under torch.compile, run it eagerly
def _per_segment(module, query, key, value, bounds, dropout: float, scaling: float | None) -> torch.Tensor:
    """(1, H, T, D) queries, (1, H_kv, T, D) keys / values -> (1, T, H, D): causal SDPA inside
    each [start, end) segment, concatenated along T."""
    groups = getattr(module, "num_key_value_groups", 1)
    outs = []
    for start, end in bounds:
        outs.append(F.scaled_dot_product_attention(
            query[:, :, start:end], key[:, :, start:end], value[:, :, start:end],
            dropout_p=dropout, scale=scaling, is_causal=True, enable_gqa=groups > 1))  # (1, H, len, D)
    return torch.cat(outs, dim=2).transpose(1, 2).contiguous()  # (1, T, H, D)


def segment_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                              scaling: float | None = None, **kwargs):
    """transformers' attention-function signature: (attention output (B, T, H, D), None)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, length = query.shape[0], query.shape[2]
    rows = None
    if attention_mask is None and key.shape[2] == length:  # no padding mask, no cache: causal only
        rows = _row_segments(batch, length, kwargs.get("cu_seq_lens_q"), kwargs.get("position_ids"))
    if rows is None or kwargs.get("softcap") is not None or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    out = [_per_segment(module, query[i:i + 1], key[i:i + 1], value[i:i + 1], bounds, dropout, scaling)
           for i, bounds in enumerate(rows)]
    return torch.cat(out, dim=0), None  # (B, T, H, D)


def segment_mask(batch_size: int, q_length: int, kv_length: int, q_offset=0, kv_offset=0, attention_mask=None,
                 local_size=None, use_vmap: bool = False, **kwargs):
    """transformers' mask-builder signature: None when there is nothing but causality to mask
    (no 2D mask, no cache, full causal attention: a packed row's segments are the attention
    function's job), else transformers' SDPA mask."""
    from transformers.masking_utils import sdpa_mask

    config = kwargs.get("config")
    plain = (attention_mask is None and q_length == kv_length and _is_zero(q_offset) and _is_zero(kv_offset)
             and local_size is None and not use_vmap and getattr(config, "is_causal", True))
    if plain:
        return None
    return sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                     kv_offset=kv_offset, attention_mask=attention_mask, local_size=local_size,
                     use_vmap=use_vmap, **kwargs)


def _is_zero(offset) -> bool:
    return (int(offset) if torch.is_tensor(offset) else offset) == 0


def register_segment_attention() -> str:
    """Register the attention function and the mask builder (idempotent); returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(SEGMENT_ATTENTION, segment_attention_forward)
    AttentionMaskInterface.register(SEGMENT_ATTENTION, segment_mask)
    return SEGMENT_ATTENTION


def use_segment_attention(model) -> str:
    """Switch `model` to the per-segment attention; returns the implementation it had."""
    previous = model.config._attn_implementation
    model.set_attn_implementation(register_segment_attention())
    return previous
