"""Prompt tuning <-> HF peft's PROMPT_TUNING adapter folder.

peft stores the (P, H) virtual-token matrix as the one tensor `prompt_embeddings`; its
adapter_config.json names the size and how it was initialised. Only the plain causal-LM layout
(one transformer submodule) is ours.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from deltatune.errors import DeltatuneError
from deltatune.methods.prompt.config import PromptConfig

_INIT_NAMES = {"vocab": "SAMPLE_VOCAB", "random": "RANDOM", "text": "TEXT"}


def peft_adapter_config(model: nn.Module, cfg: PromptConfig, installed, base_model_path: str) -> dict[str, Any]:
    """The adapter_config.json `peft.PeftModel.from_pretrained` reads for our virtual tokens."""
    config = model.config
    return {
        "peft_type": "PROMPT_TUNING",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_path,
        "revision": None,
        "inference_mode": True,
        "num_virtual_tokens": cfg.num_virtual_tokens,
        "token_dim": int(installed.prompt.weight.shape[1]),
        "num_transformer_submodules": 1,
        "num_attention_heads": int(config.num_attention_heads),
        "num_layers": int(config.num_hidden_layers),
        "prompt_tuning_init": _INIT_NAMES[cfg.init_kind],
        "prompt_tuning_init_text": cfg.init_text,
        "tokenizer_name_or_path": base_model_path if cfg.init_kind == "text" else None,
        "tokenizer_kwargs": None,
    }


def config_from_peft(raw: dict[str, Any], where: str) -> PromptConfig:
    """A peft PROMPT_TUNING adapter_config dict -> our PromptConfig."""
    if raw.get("num_transformer_submodules", 1) not in (1, None):
        raise DeltatuneError(f"{where}: num_transformer_submodules={raw['num_transformer_submodules']} "
                             "(encoder-decoder prompt tuning) is not supported")
    init = {v: k for k, v in _INIT_NAMES.items()}.get(str(raw.get("prompt_tuning_init", "RANDOM")), "random")
    text = raw.get("prompt_tuning_init_text") if init == "text" else None
    try:
        return PromptConfig(num_virtual_tokens=raw["num_virtual_tokens"], init=init, init_text=text)
    except (KeyError, ValueError) as err:
        raise DeltatuneError(f"{where}: not a usable prompt-tuning config: {err}") from None
