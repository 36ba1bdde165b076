"""Prefix tuning (Li & Liang 2021, "Prefix-Tuning: Optimizing Continuous Prompts for
Generation", arXiv:2101.00190) and deep prompt tuning (P-tuning v2, Liu et al. 2022,
arXiv:2110.07602): P trained key/value pairs in front of every attention layer's own.

    head_l = softmax(q_l [K_prefix,l ; K_l]^T / sqrt(d)) [V_prefix,l ; V_l]     for every layer l
    [K_prefix ; V_prefix] = table (P, layers * 2 * kv_width)                   (prefix_projection false)
                          = W2 tanh(W1 E + b1) + b2,  E: (P, kv_width)          (the paper's reparameterisation)

The prefix keys are stored as they are (no rotary embedding: they are cache entries, as in
peft); the real tokens keep their own positions shifted by P, as if the prefix had taken
positions 0..P-1 (peft adds P to the caller's position ids, or lets the model count from the
cache length P).

It plugs in through two documented torch module hooks on the decoder stack
(`register_forward_pre_hook` / `register_forward_hook`, `with_kwargs=True`), so every caller of
`model(...)` or `model.get_decoder()(...)` — training loss, evaluation, cached generation,
export checks, serving — gets the prefix:

  - prefill (no cache, or an empty one): the KV cache is seeded with the prefix (the caller's
    empty cache in place, else a new `DynamicCache`); the attention mask gets P ones in front;
    explicit position ids are shifted by P;
  - cached decoding (the cache already holds the prefix): mask and positions are shifted the
    same way;
  - nothing is prepended to the hidden states, so nothing is cut on the way out: hidden states
    and logits stay aligned with the caller's tokens (a caller that asked for `use_cache=False`
    gets no cache back, as without the prefix).

The flat table's layout is peft's: (P, layers, 2 [key, value], kv_heads, head_dim).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache

from deltatune.errors import DeltatuneError
from deltatune.methods.decoder_hooks import DecoderHooksInstall, as_keywords, batch_size, positional_names
from deltatune.methods.installs import copy_state
from deltatune.methods.protocol import MethodHooks

SLOT = "prefix_encoder"  # the module's name on the model: `prefix_encoder.embedding.weight`, ...


@dataclass(frozen=True)
class KvGeometry:
    """The key/value shape of a decoder's attention layers (grouped-query heads counted once)."""

    layers: int
    kv_heads: int
    head_dim: int

    @property
    def width(self) -> int:
        """One layer's key (or value) width: kv_heads x head_dim."""
        return self.kv_heads * self.head_dim

    @property
    def flat(self) -> int:
        """One virtual token's row of the table: every layer's key and value."""
        return self.layers * 2 * self.width

    @classmethod
    def of_model(cls, model: nn.Module) -> "KvGeometry":
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        heads = int(config.num_attention_heads)
        kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return cls(int(config.num_hidden_layers), kv_heads, int(head_dim))


class PrefixEncoder(nn.Module):
    """The prefix: a trained (P, layers * 2 * kv_width) table, or the paper's MLP over a
    (P, kv_width) embedding. Parameter names are peft's (`embedding.weight`, `transform.0.*`,
    `transform.2.*`); fp32. Initial values as peft's: N(0, 1) embeddings, torch's Linear init."""

    def __init__(self, num_tokens: int, geometry: KvGeometry, hidden: int | None = None):
        super().__init__()
        self.geometry = geometry
        if hidden is None:
            self.embedding = nn.Embedding(num_tokens, geometry.flat)
            self.transform = None
        else:
            self.embedding = nn.Embedding(num_tokens, geometry.width)
            self.transform = nn.Sequential(
                nn.Linear(geometry.width, hidden), nn.Tanh(), nn.Linear(hidden, geometry.flat)
            )

    @property
    def num_tokens(self) -> int:
        return self.embedding.weight.shape[0]

    def table(self) -> torch.Tensor:
        """(P, layers * 2 * kv_width): the prefix keys and values of every layer."""
        embedding = self.embedding.weight  # (P, flat) or (P, kv_width)
        return embedding if self.transform is None else self.transform(embedding)

    @torch.no_grad()
    def start_at(self, table: torch.Tensor) -> None:
        """Make `table()` return `table` (P, flat). The plain table is set to it. With the MLP,
        E, W1, b1 and b2 keep their random init and the last weight is solved for: with
        H = tanh(W1 E + b1) (P, hidden), W2 = lstsq(H, table - b2)^T, the minimum-norm exact
        solution when hidden >= P (H has full row rank), so MLP(E) = table and every parameter
        still gets gradients from the first step."""
        weight = self.embedding.weight
        table = table.to(weight.device, torch.float64)
        if self.transform is None:
            weight.copy_(table.to(weight.dtype))
            return
        first, last = self.transform[0], self.transform[2]
        hidden = torch.tanh(nn.functional.linear(weight.double(), first.weight.double(), first.bias.double()))
        if hidden.shape[1] < hidden.shape[0]:
            raise DeltatuneError(f"method.init_text with prefix_projection needs encoder_hidden_size >= "
                                 f"num_virtual_tokens ({hidden.shape[1]} < {hidden.shape[0]}): the MLP cannot "
                                 f"reproduce {hidden.shape[0]} independent rows otherwise")
        solution = torch.linalg.pinv(hidden) @ (table - last.bias.double())  # (hidden, flat)
        last.weight.copy_(solution.T.to(last.weight.dtype))

    def key_values(self, batch: int, dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (keys, values), each (B, kv_heads, P, head_dim)."""
        g, n = self.geometry, self.num_tokens
        kv = self.table().to(dtype).view(n, g.layers, 2, g.kv_heads, g.head_dim)
        kv = kv.permute(1, 2, 3, 0, 4)  # (layers, 2, kv_heads, P, head_dim)
        shape = (batch, g.kv_heads, n, g.head_dim)
        return [(kv[layer, 0].expand(shape), kv[layer, 1].expand(shape)) for layer in range(g.layers)]

    def extra_repr(self) -> str:
        g = self.geometry
        return f"num_virtual_tokens={self.num_tokens}, layers={g.layers}, kv_heads={g.kv_heads}, head_dim={g.head_dim}"


def folded_table(state: dict[str, torch.Tensor]) -> torch.Tensor:
    """The (P, flat) table a reparameterised prefix's state computes: W2 tanh(W1 E + b1) + b2
    (the same ops as `PrefixEncoder.table`, so the folded adapter computes the same bits)."""
    e = state[f"{SLOT}.embedding.weight"]
    hidden = torch.tanh(nn.functional.linear(e, state[f"{SLOT}.transform.0.weight"], state[f"{SLOT}.transform.0.bias"]))
    return nn.functional.linear(hidden, state[f"{SLOT}.transform.2.weight"], state[f"{SLOT}.transform.2.bias"]).detach()


def _cache_key(decoder: nn.Module, kwargs: dict) -> str:
    """The keyword the caller passed the cache under (`cache` since transformers 5.2x,
    `past_key_values` before), else the one the decoder's forward takes."""
    for key in ("cache", "past_key_values"):
        if kwargs.get(key) is not None:
            return key
    return "cache" if "cache" in positional_names(decoder) else "past_key_values"


class PrefixInstall(DecoderHooksInstall):
    """The `Installed` of prefix tuning / P-tuning v2: the encoder lives on the model as `SLOT`
    while attached, and the decoder's two hooks do the rest (see the module docstring)."""

    slot = SLOT

    def __init__(self, model: nn.Module, encoder: PrefixEncoder, label: str):
        self.model = model
        self.encoder = encoder
        self.label = label  # the method's name in messages
        self.hooks = MethodHooks()
        self._handles: list = []
        self._drop_cache = False  # set by the pre-hook, read by the post-hook of the same call
        self.attach()

    def slot_module(self) -> nn.Module:
        return self.encoder

    # -- the two hooks
    def _before(self, decoder: nn.Module, args: tuple, kwargs: dict):
        kwargs = as_keywords(decoder, args, kwargs, self.label)
        n = self.encoder.num_tokens
        batch = batch_size(kwargs, self.label)
        key = _cache_key(decoder, kwargs)
        cache = kwargs.get(key)
        self._drop_cache = False
        if cache is None or cache.get_seq_length() == 0:  # prefill: seed the cache with the prefix
            if any(getattr(m, "gradient_checkpointing", False) for m in self.model.modules()) and self.model.training:
                raise DeltatuneError(f"{self.label} keeps its prefix in the KV cache, which gradient "
                                     "checkpointing drops: turn gradient checkpointing off")
            cache = cache if cache is not None else DynamicCache(config=self.model.config)
            dtype = self.model.get_input_embeddings().weight.dtype
            for layer, (keys, values) in enumerate(self.encoder.key_values(batch, dtype)):
                cache.update(keys, values, layer)
            kwargs[key] = cache
            self._drop_cache = kwargs.get("use_cache") is False
        mask = kwargs.get("attention_mask")
        if mask is not None:
            if mask.dim() != 2:
                raise DeltatuneError(f"{self.label} needs a 2-D (batch, length) attention mask")
            kwargs["attention_mask"] = torch.cat([mask.new_ones((batch, n)), mask], dim=1)  # (B, P + past + T)
        if kwargs.get("position_ids") is not None:
            kwargs["position_ids"] = kwargs["position_ids"] + n  # as peft: the prefix took 0..P-1
        return (), kwargs

    def _after(self, decoder: nn.Module, args: tuple, kwargs: dict, output):
        if self._drop_cache:  # the caller did not ask for a cache: do not hand back the seeded one
            for name in ("cache", "past_key_values"):
                if getattr(output, name, None) is not None:
                    setattr(output, name, None)
            self._drop_cache = False
        return output

    # -- the protocol
    def _tensors(self) -> dict[str, torch.Tensor]:
        return {f"{SLOT}.{k}": t for k, t in self.encoder.state_dict(keep_vars=True).items()}

    def state(self) -> dict[str, torch.Tensor]:
        return {name: t.detach() for name, t in self._tensors().items()}

    def load_state(self, tensors: dict[str, torch.Tensor], where: str) -> None:
        copy_state(self._tensors(), tensors, where)

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.encoder.parameters() if p.requires_grad]

    def merge(self) -> None:
        raise DeltatuneError(
            f"{self.label} puts trained keys/values in front of every attention layer's own: it cannot be "
            "merged into the base weights. Serve the adapter unmerged (deltatune serve --adapter NAME=RUN_DIR)"
        )

    unmerge = merge
    merge_and_unload = merge
