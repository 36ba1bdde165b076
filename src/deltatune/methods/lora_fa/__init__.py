"""LoRA-FA (Zhang et al. 2023, arXiv:2308.03303): LoRA with A frozen at its random init; only B trains.

    method: {name: lora_fa, r: 16, alpha: 32, targets: all-linear}
    from deltatune.methods.lora_fa import METHOD       # the registry row

The layer is LoRA's (`deltatune.methods.lora.layer.LoRALinear`), with A's requires_grad off:

    h = W0 x + s B (A x),    A: (r, in) fixed random projection,  B: (out, r) trained (starts at 0)

so the update  Delta W = s B A  keeps its row space in the fixed r-dim span of A's rows.

The paper's point is activation memory. LoRA's weight gradient of A is  dL/dA = s B^T dL/dh x^T:
backward needs the full input x (tokens x in) of every adapted layer, kept from the forward.
With A frozen no gradient of A is formed; B's gradient  dL/dB = s dL/dh (A x)^T  needs only
A x (tokens x r). For an all-linear adapter that drops the per-layer inputs autograd would
otherwise hold (benchmarks/lora_fa_memory.py measures it), and drops A's optimiser state.

Saved adapters are plain LoRA tensors (A and B; peft twin "LORA": peft loads them as LoRA,
vLLM serves them), while our own folder records `lora_fa`, so it loads back as LoRA-FA (A
frozen again). A plain peft LoRA folder still loads as `lora` (`accepts` is False here).
"""

from __future__ import annotations

import torch
from torch import nn

from deltatune.methods.installs import WrapperInstall
from deltatune.methods.lora import install_lora, peft_format
from deltatune.methods.lora_fa.config import LoraFaConfig
from deltatune.methods.peft_layout import from_peft_key, to_peft_key
from deltatune.methods.protocol import InstallContext, Method, PeftTwin

__all__ = ["METHOD", "LoraFaConfig", "install_lora_fa"]


def install_lora_fa(model: nn.Module, cfg: LoraFaConfig, ctx: InstallContext) -> WrapperInstall:
    """LoRA's wrappers (same draws, checks and LoRA+ groups), then A frozen: only B trains."""
    installed = install_lora(model, cfg, ctx)
    for wrapper in installed.wrappers.values():
        a = wrapper.lora_A.weight
        a.requires_grad_(False)
        if a.dtype in (torch.bfloat16, torch.float16):  # B becomes fp32 master weights: A matches it
            a.data = a.data.float()
    return installed


def _config_from_peft(raw: dict, where: str) -> LoraFaConfig:
    return peft_format.config_from_peft(raw, where, config_cls=LoraFaConfig)


METHOD = Method(
    name="lora_fa",
    capacity_hint="a larger rank (method.r) or more target modules (method.targets)",
    config_cls=LoraFaConfig,
    install=install_lora_fa,
    peft=PeftTwin("LORA", peft_format.peft_adapter_config, _config_from_peft, to_peft_key, from_peft_key,
                  accepts=lambda raw: False),  # a plain peft LoRA folder is `lora`'s
    summary="LoRA with A frozen at its random init, only B trains: less activation memory (Zhang et al. 2023)",
)
