"""A prefix every row of a batch shares, run through the decoder once instead of once per row.

    hidden = shared_prefix_hidden(model, input_ids, attention_mask)   # == decoder_hidden(...)[0]

Chat data starts every example with the same tokens: SmolLM2's template puts its system prompt
and `<|im_start|>user\\n` (24 tokens) before each question, 40% of an orgfacts example. Here
the longest prefix the rows share is run once, as a batch of one, keeping its keys and values
(the KV cache); the rest of every row then runs with that cache repeated over the batch, and
the prefix's hidden states are repeated in front of the rows' own. Causal attention makes this
the same computation: a token of the shared prefix sees only prefix tokens, identical in every
row. Autograd carries the rows' gradients back through the repeated cache into the one prefix
pass, so losses and gradients equal the plain path's (fp32, up to summation order: tested).

It pays when the prefix is long against the rows and the batch has several rows; it needs rows
padded on the right (the training collation) and a method that leaves the decoder's inputs
alone (prompt / prefix tuning and P-tuning add virtual tokens and keys of their own:
`supports_shared_prefix` says no, and the plain path runs).
"""

from __future__ import annotations

import torch

from deltatune.forward import decoder_hidden

MIN_SHARED_TOKENS = 8  # shorter shared prefixes are not worth a second decoder call


def shared_prefix_length(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> int:
    """Tokens every row starts with (all of them real, not padding); 0 for one row. One token
    is always left to every row, so the second call has a query in each."""
    if input_ids.shape[0] < 2:
        return 0
    same = (input_ids == input_ids[:1]).all(dim=0)
    if attention_mask is not None:
        same &= attention_mask.bool().all(dim=0)
    differs = (~same).nonzero()
    length = int(differs[0]) if len(differs) else input_ids.shape[1]
    return min(length, input_ids.shape[1] - 1)


def supports_shared_prefix(model) -> bool:
    """False when a method changes what the decoder is fed (decoder hooks: virtual tokens,
    prefix keys), since the cached prefix would then not be the plain one."""
    decoder = model.get_decoder()  # the hooks deltatune.methods.decoder_hooks puts on it
    return not (decoder._forward_pre_hooks or decoder._forward_hooks)


def shared_prefix_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Last hidden states (B, T, H), as `decoder_hidden` gives them, with the shared prefix run once."""
    prefix = shared_prefix_length(input_ids, attention_mask)
    if prefix < MIN_SHARED_TOKENS:
        return decoder_hidden(model, input_ids, attention_mask)[0]
    rows, length = input_ids.shape
    prefix_hidden, cache = decoder_hidden(model, input_ids[:1, :prefix], None, use_cache=True)
    cache.batch_repeat_interleave(rows)  # each layer's (1, heads, P, d) keys/values -> (B, ...)
    positions = torch.arange(prefix, length, device=input_ids.device).expand(rows, -1)
    mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
    rest, _ = decoder_hidden(model, input_ids[:, prefix:], mask, positions, cache=cache)
    return torch.cat([prefix_hidden.expand(rows, -1, -1), rest], dim=1)
