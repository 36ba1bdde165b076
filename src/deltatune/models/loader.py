"""Load causal LMs, encoders and tokenizers from an embedded alias, a local HF folder or a hub id.

    model, tokenizer = load_causal_lm(ModelConfig(name="smollm2-135m"))
    model, tokenizer = load_encoder(ModelConfig(name="minilm-l6"))    # a bare BERT-style encoder
    is_encoder(ModelConfig(name="minilm-l6"))                          # True: no causal LM

Weights load in the configured dtype (fp32 by default: this project's CPUs have no fast bf16)
on the configured device (`model.device`, default `auto`: the GPU when torch sees one), in eval
mode; recipes switch to train mode themselves. Only safetensors are accepted and
`trust_remote_code` stays off unless the config turns it on.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from deltatune.errors import DeltatuneError
from deltatune.models.device import DTYPES, resolve_device
from deltatune.models.embedded import EMBEDDED, embedded_path, is_embedded


def resolve_model_path(name: str) -> str:
    """Embedded alias -> converted folder; an existing folder -> itself; else a hub id."""
    if is_embedded(name):
        return str(embedded_path(name))
    path = Path(name).expanduser()
    if path.is_dir():
        if (path / "config.yaml").is_file() and not (path / "config.json").is_file():
            return str(path.resolve())  # a deltatune run dir: loads as its base + adapter, merged
        if not (path / "config.json").is_file():
            raise DeltatuneError(f"model folder {path} has no config.json: is it a Hugging Face model folder?")
        return str(path)
    looks_like_path = name.startswith((".", "/", "~")) or os.sep in name.strip("/").split("/", 1)[-1]
    if looks_like_path or os.environ.get("HF_HUB_OFFLINE") == "1":
        raise DeltatuneError(
            f"model.name {name!r}: no such folder, and not an embedded model "
            f"(embedded: {', '.join(EMBEDDED)}). Point model.name at a local HF model folder."
        )
    return name  # a hub id; transformers downloads it when online


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    """The model's tokenizer with a pad token guaranteed (falls back to EOS)."""
    from transformers import AutoTokenizer

    from deltatune.models.runs import is_run_dir

    if is_run_dir(name_or_path):  # a run dir: its base model's tokenizer
        from deltatune.config import load_run_config

        name_or_path = load_run_config(name_or_path).model.name
        return load_tokenizer(name_or_path, trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name_or_path), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(model_cfg, device: str | torch.device | None = None, dtype: str | None = None):
    """(model, tokenizer) for a `ModelConfig`, in eval mode on `device` (default: the config's
    `model.device`) in `dtype` (default: the config's `model.dtype`)."""
    from transformers import AutoModelForCausalLM

    from deltatune.models.runs import is_run_dir, load_run_as_base

    if is_run_dir(model_cfg.name):  # continue from a finished run (e.g. DPO after SFT)
        return load_run_as_base(model_cfg.name, device if device is not None else model_cfg.device,
                                dtype or model_cfg.dtype)
    path = resolve_model_path(model_cfg.name)
    device = resolve_device(device if device is not None else model_cfg.device)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=DTYPES[dtype or model_cfg.dtype],
            trust_remote_code=model_cfg.trust_remote_code,
            use_safetensors=True,
        )
    except OSError as err:
        raise DeltatuneError(f"could not load model {model_cfg.name!r} from {path}: {err}") from err
    tokenizer = load_tokenizer(path, model_cfg.trust_remote_code)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(device).eval(), tokenizer


def is_encoder(model_cfg) -> bool:
    """Is `model.name` a bidirectional encoder (BERT, RoBERTa, MiniLM, ...) rather than a causal
    LM? True for an architecture transformers knows as a masked LM, not marked as a decoder,
    and not in its causal-LM table under its own name (BERT is there too, as BertLMHeadModel,
    but its saved `architectures` say BertModel / BertForMaskedLM). A run dir is never one here:
    it loads as a merged causal base (deltatune.models.runs)."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    from deltatune.models.runs import is_run_dir

    if is_run_dir(model_cfg.name):
        return False
    config = AutoConfig.from_pretrained(resolve_model_path(model_cfg.name), trust_remote_code=model_cfg.trust_remote_code)
    if getattr(config, "is_decoder", False):
        return False
    if any(arch.endswith("ForCausalLM") or arch.endswith("LMHeadModel") for arch in (config.architectures or [])):
        return False
    return config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def load_encoder(model_cfg, device: str | torch.device | None = None, dtype: str | None = None):
    """(bare encoder, tokenizer) for a `ModelConfig` naming an encoder, in eval mode on `device`
    in `dtype` (defaults: the config's). The encoder's own pooler (BERT's dense + tanh over
    [CLS], trained for next-sentence prediction) is dropped: a classification head pools the
    hidden states itself, and an unused layer would only collect method modules."""
    from transformers import AutoModel

    path = resolve_model_path(model_cfg.name)
    device = resolve_device(device if device is not None else model_cfg.device)
    try:
        model = AutoModel.from_pretrained(path, dtype=DTYPES[dtype or model_cfg.dtype],
                                          trust_remote_code=model_cfg.trust_remote_code, use_safetensors=True)
    except OSError as err:
        raise DeltatuneError(f"could not load encoder {model_cfg.name!r} from {path}: {err}") from err
    if isinstance(getattr(model, "pooler", None), torch.nn.Module):
        model.pooler = None
    tokenizer = load_tokenizer(path, model_cfg.trust_remote_code)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(device).eval(), tokenizer
