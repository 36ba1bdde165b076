"""Prefix tuning / P-tuning v2 <-> HF peft's PREFIX_TUNING adapter folder.

peft stores one tensor, `prompt_embeddings`: the (P, layers * 2 * kv_width) table (for a
reparameterised prefix the MLP's output: peft, like us, keeps only that). Its adapter_config
names the geometry after peft's grouped-query adjustment (`token_dim` = kv_width,
`num_attention_heads` = KV heads). Only the plain causal-LM layout (one transformer submodule)
is ours. A plain peft folder with `prefix_projection: true` reads as `prefix` (folded), one
without as `ptuning_v2`: both the same table.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from deltatune.errors import DeltatuneError
from deltatune.methods.prefix.layer import SLOT

TABLE = f"{SLOT}.embedding.weight"  # our name of the table; peft's is `prompt_embeddings`


def to_key(name: str) -> str:
    if name != TABLE:
        raise DeltatuneError(f"{name}: only the folded prefix table has a peft key")
    return "prompt_embeddings"


def from_key(key: str) -> str:
    if key != "prompt_embeddings":
        raise DeltatuneError(f"tensor {key!r} is not peft's prefix `prompt_embeddings`")
    return TABLE


def peft_adapter_config(model: nn.Module, cfg, installed, base_model_path: str) -> dict[str, Any]:
    """The adapter_config.json `peft.PeftModel.from_pretrained` reads for our (folded) prefix."""
    g = installed.encoder.geometry
    return {
        "peft_type": "PREFIX_TUNING",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_path,
        "revision": None,
        "inference_mode": True,
        "num_virtual_tokens": cfg.num_virtual_tokens,
        "token_dim": g.width,
        "num_transformer_submodules": 1,
        "num_attention_heads": g.kv_heads,
        "num_layers": g.layers,
        "encoder_hidden_size": g.width,
        "prefix_projection": False,  # the folder holds the table: peft can also train it on
        "init_weights": None,
        "modules_to_save": None,
    }


def check_plain_layout(raw: dict[str, Any], where: str) -> int:
    """num_virtual_tokens of a usable PREFIX_TUNING config, or a DeltatuneError."""
    if raw.get("num_transformer_submodules", 1) not in (1, None):
        raise DeltatuneError(f"{where}: num_transformer_submodules={raw['num_transformer_submodules']} "
                             "(encoder-decoder prefix tuning) is not supported")
    try:
        return int(raw["num_virtual_tokens"])
    except (KeyError, TypeError, ValueError):
        raise DeltatuneError(f"{where}: no usable num_virtual_tokens in the prefix-tuning config") from None
