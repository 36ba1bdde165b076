"""Bottleneck adapters: small down -> f -> up networks inserted into every transformer block.

    method: {name: adapter, placement: houlsby, reduction_factor: 16}
    from deltatune.methods.adapter import METHOD        # the registry row
    installed = METHOD.install(model, AdapterConfig(placement="pfeiffer"), InstallContext())

Placements (Llama names; each block from `adapter_drop` up):

    houlsby   Houlsby et al. 2019 (arXiv:1902.00751): a SequentialAdapter around the attention
              output projection (self_attn.o_proj) and one around the FFN's (mlp.down_proj):
              y' = y + W_up f(W_down y), before each residual add. 2 adapters per block.
    pfeiffer  Pfeiffer et al. 2021 (arXiv:2005.00247): after the FFN only (mlp.down_proj). 1 per block.
              (Pfeiffer's LayerNorm arrangement belongs to post-LN BERT; in a pre-norm Llama block the
              adapter sits on the FFN output just before the residual add.)
    parallel  He et al. 2022 (arXiv:2110.04366): a ParallelAdapter around the whole FFN (mlp) and,
              with parallel_at: [ffn, attention], the attention module (self_attn):
              y' = F(x) + 4 * W_up f(W_down x).

Trainable elements: per adapter 2*H*b + b + H (b = hidden // reduction_factor or `bottleneck`).
AdapterDrop (Rücklé et al. 2021, arXiv:2010.11918): `adapter_drop: k` leaves the lowest k blocks
unadapted; nothing below block k trains, so autograd's graph starts at block k and the backward
pass skips those blocks by itself (benchmarks/adapter_drop.py measures the step time).
Not mergeable (non-linear in the input): merge raises, adapters are served unmerged; saved as
model.safetensors by model names (peft has no bottleneck adapters).
"""

from __future__ import annotations

from torch import nn

from deltatune.methods.adapter.config import AdapterConfig
from deltatune.methods.adapter.layer import Bottleneck, ParallelAdapter, SequentialAdapter
from deltatune.methods.adapter.sites import adapter_sites, bottleneck_size, check_output_width, hidden_size
from deltatune.methods.installs import WrapperInstall
from deltatune.methods.protocol import InstallContext, Method

__all__ = ["METHOD", "AdapterConfig", "Bottleneck", "ParallelAdapter", "SequentialAdapter", "install_adapter"]

_WRAPPERS = {"sequential": SequentialAdapter, "parallel": ParallelAdapter}


def install_adapter(model: nn.Module, cfg: AdapterConfig, ctx: InstallContext) -> WrapperInstall:
    """A fresh adapter (W_up = 0: the base's function) around every site of the placement; the
    base modules are kept as each wrapper's `base_layer`, untouched. All checks run first."""
    hidden = hidden_size(model)
    bottleneck = bottleneck_size(model, cfg)
    sites = adapter_sites(model, cfg)
    check_output_width(model, sites, hidden)
    scaling = cfg.effective_scaling()
    wrappers = {
        name: _WRAPPERS[how](model.get_submodule(name), hidden, bottleneck, cfg.activation, cfg.init_std, scaling)
        for name, how in sites.items()
    }
    return WrapperInstall(model, wrappers)


METHOD = Method(
    name="adapter",
    capacity_hint="a wider bottleneck (a smaller method.reduction_factor) or no adapter_drop",
    config_cls=AdapterConfig,
    install=install_adapter,
    mergeable=False,  # W_up f(W_down h) is non-linear: no weight change reproduces it
    summary="bottleneck adapters after / beside attention and FFN (Houlsby 2019, Pfeiffer 2021, He 2022)",
)
