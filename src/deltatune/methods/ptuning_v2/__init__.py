"""P-tuning v2 (Liu et al. 2022, "P-Tuning v2: Prompt Tuning Can Be Comparable to Fine-tuning
Universally Across Scales and Tasks", arXiv:2110.07602): deep prompt tuning, i.e. trained
prompts in every layer — prefix tuning's key/value prefix as a plain table (no MLP).

    method: {name: ptuning_v2, num_virtual_tokens: 20}
    from deltatune.methods.ptuning_v2 import METHOD

Thin: the layer, its hooks and the peft layout (PREFIX_TUNING, `prefix_projection: false`)
are prefix tuning's (`deltatune.methods.prefix`).
"""

from __future__ import annotations

from pydantic import ValidationError
from torch import nn

from deltatune.errors import DeltatuneError
from deltatune.methods.prefix import install_kv_prefix
from deltatune.methods.prefix.layer import PrefixInstall
from deltatune.methods.prefix.peft_format import check_plain_layout, from_key, peft_adapter_config, to_key
from deltatune.methods.protocol import InstallContext, Method, PeftTwin
from deltatune.methods.ptuning_v2.config import PTuningV2Config

__all__ = ["METHOD", "PTuningV2Config", "install_ptuning_v2"]


def install_ptuning_v2(model: nn.Module, cfg: PTuningV2Config, ctx: InstallContext) -> PrefixInstall:
    """A (P, layers * 2 * kv_width) table of prompts in every layer: N(0, 1) as peft's, or the
    base model's own keys/values of `init_text`."""
    return install_kv_prefix(model, cfg.num_virtual_tokens, None, ctx, "P-tuning v2", cfg.init_text)


def config_from_peft(raw: dict, where: str) -> PTuningV2Config:
    """A peft PREFIX_TUNING config without `prefix_projection` -> ours."""
    try:
        return PTuningV2Config(num_virtual_tokens=check_plain_layout(raw, where))
    except ValidationError as err:
        raise DeltatuneError(f"{where}: not a usable prefix-tuning config: {err}") from None


METHOD = Method(
    name="ptuning_v2",
    capacity_hint="more virtual tokens (method.num_virtual_tokens) or a method with more capacity (lora)",
    config_cls=PTuningV2Config,
    install=install_ptuning_v2,
    mergeable=False,
    peft=PeftTwin("PREFIX_TUNING", peft_adapter_config, config_from_peft, to_key, from_key,
                  accepts=lambda raw: raw.get("prefix_projection") is not True),
    summary="deep prompt tuning: trained key/value prompts in every layer (Liu et al. 2022)",
)
