"""P-tuning (Liu et al. 2021): virtual tokens at the input from a trained prompt encoder
(bi-LSTM + MLP, or an MLP); the encoder's output is folded to a (P, H) table when saved.

    method: {name: ptuning, num_virtual_tokens: 20, encoder: lstm}
    from deltatune.methods.ptuning import METHOD
"""

from __future__ import annotations

import torch
from pydantic import ValidationError
from torch import nn

from deltatune.errors import DeltatuneError
from deltatune.methods.prompt.layer import SLOT
from deltatune.methods.protocol import InstallContext, Method, PeftTwin
from deltatune.methods.ptuning.config import PTuningConfig
from deltatune.methods.ptuning.layer import PTuningEncoder, PTuningInstall

__all__ = ["METHOD", "PTuningConfig", "PTuningEncoder", "fold_encoder", "install_ptuning"]

TABLE = f"{SLOT}.embedding.weight"  # the (P, H) embedding; peft's key for the folded table is `prompt_embeddings`


def build_encoder(cfg: PTuningConfig, dim: int) -> PTuningEncoder:
    """The encoder `cfg` asks for over `dim`-wide embeddings (the model's hidden size)."""
    return PTuningEncoder(cfg.num_virtual_tokens, dim, cfg.encoder, cfg.encoder_hidden_size or dim,
                          cfg.encoder_num_layers or 2, cfg.encoder_dropout)


def install_ptuning(model: nn.Module, cfg: PTuningConfig, ctx: InstallContext) -> PTuningInstall:
    """The encoder on `model`; its output goes before every input (the decoder gets prompt
    tuning's two hooks)."""
    if not callable(getattr(model, "get_decoder", None)) or model.get_input_embeddings() is None:
        raise DeltatuneError(f"P-tuning needs a decoder model with input embeddings; got {type(model).__name__}")
    if hasattr(model, SLOT):
        raise DeltatuneError(f"this model already carries prompt embeddings ({SLOT})")
    table = model.get_input_embeddings().weight  # (V, H)
    encoder = build_encoder(cfg, table.shape[1])
    if not ctx.initialise:  # about to be loaded: skip drawing random values
        for param in encoder.parameters():
            nn.init.zeros_(param)
    return PTuningInstall(model, encoder.to(table.device))


@torch.no_grad()
def fold_encoder(cfg: PTuningConfig, state: dict) -> tuple[PTuningConfig, dict]:
    """What an adapter folder keeps (`Method.save_as`): the encoder's (P, H) output, under
    `encoder: none` (peft saves `prompt_embeddings` the same way). Computed by the same module
    in eval mode, so the folded adapter gives the trained model's outputs bit for bit."""
    if cfg.encoder == "none":
        return cfg, state
    encoder = build_encoder(cfg, state[TABLE].shape[1])
    encoder.load_state_dict({k[len(SLOT) + 1:]: v for k, v in state.items()})
    table = encoder.to(state[TABLE].device).eval().weight.detach()
    folded = PTuningConfig(num_virtual_tokens=cfg.num_virtual_tokens, encoder="none")
    return folded, {TABLE: table}


def peft_adapter_config(model: nn.Module, cfg: PTuningConfig, installed, base_model_path: str) -> dict:
    """The adapter_config.json `peft.PeftModel.from_pretrained` reads for our (folded) prompts:
    peft loads `prompt_embeddings` as they are; its encoder fields only matter for training."""
    dim = int(model.get_input_embeddings().weight.shape[1])
    return {
        "peft_type": "P_TUNING",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_path,
        "revision": None,
        "inference_mode": True,
        "num_virtual_tokens": cfg.num_virtual_tokens,
        "token_dim": dim,
        "num_transformer_submodules": 1,
        "num_attention_heads": int(model.config.num_attention_heads),
        "num_layers": int(model.config.num_hidden_layers),
        "encoder_reparameterization_type": "LSTM" if cfg.encoder == "lstm" else "MLP",
        "encoder_hidden_size": cfg.encoder_hidden_size or dim,
        "encoder_num_layers": cfg.encoder_num_layers or 2,
        "encoder_dropout": cfg.encoder_dropout,
        "modules_to_save": None,
    }


def config_from_peft(raw: dict, where: str) -> PTuningConfig:
    """A peft P_TUNING config -> ours, folded (peft saved only the encoder's output)."""
    if raw.get("num_transformer_submodules", 1) not in (1, None):
        raise DeltatuneError(f"{where}: num_transformer_submodules={raw['num_transformer_submodules']} "
                             "(encoder-decoder P-tuning) is not supported")
    try:
        return PTuningConfig(num_virtual_tokens=raw["num_virtual_tokens"], encoder="none")
    except (KeyError, ValidationError) as err:
        raise DeltatuneError(f"{where}: not a usable P-tuning config: {err}") from None


def _to_key(name: str) -> str:
    if name != TABLE:
        raise DeltatuneError(f"{name}: only the folded P-tuning table has a peft key")
    return "prompt_embeddings"


def _from_key(key: str) -> str:
    if key != "prompt_embeddings":
        raise DeltatuneError(f"tensor {key!r} is not peft's P-tuning `prompt_embeddings`")
    return TABLE


METHOD = Method(
    name="ptuning",
    capacity_hint="more virtual tokens (method.num_virtual_tokens) or a method with more capacity (lora)",
    config_cls=PTuningConfig,
    install=install_ptuning,
    mergeable=False,
    peft=PeftTwin("P_TUNING", peft_adapter_config, config_from_peft, _to_key, _from_key),
    summary="virtual input tokens from a trained bi-LSTM/MLP prompt encoder (Liu et al. 2021)",
    save_as=fold_encoder,
)
