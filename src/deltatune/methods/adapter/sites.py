"""Where bottleneck adapters go: the modules of each transformer block a placement wraps.

    sites = adapter_sites(model, cfg)   # {"model.layers.0.self_attn.o_proj": "sequential", ...}
    b = bottleneck_size(model, cfg)     # hidden_size // reduction_factor, or cfg.bottleneck

The block stack is found generically (`find_block_list`); inside each block the sublayers are
named by the config (`attention`, `attention_output`, `ffn`, `ffn_output`; Llama-style
defaults), so another architecture needs only its names. Everything here only reads the model
and raises DeltatuneError naming the config key before anything changes.
"""

from __future__ import annotations

from torch import nn

from deltatune.errors import DeltatuneError
from deltatune.methods.adapter.config import DEFAULT_REDUCTION_FACTOR, AdapterConfig
from deltatune.methods.modules import find_block_list, summarize_names


def hidden_size(model: nn.Module) -> int:
    """The width of the residual stream the adapters read and write (the model config's hidden_size)."""
    size = getattr(getattr(model, "config", None), "hidden_size", None)
    if not isinstance(size, int) or size <= 0:
        raise DeltatuneError(f"{type(model).__name__} has no config.hidden_size: bottleneck adapters need the "
                             "width of the hidden states (method adapter supports Hugging Face models)")
    return size


def bottleneck_size(model: nn.Module, cfg: AdapterConfig) -> int:
    """The bottleneck width b: `bottleneck` when set, else hidden_size // reduction_factor."""
    if cfg.bottleneck is not None:
        return cfg.bottleneck
    hidden = hidden_size(model)
    factor = cfg.reduction_factor or DEFAULT_REDUCTION_FACTOR
    if factor > hidden:
        raise DeltatuneError(
            f"method.reduction_factor={factor} is larger than the model's hidden size {hidden}, which leaves "
            f"no bottleneck (hidden_size // reduction_factor = 0): use a reduction_factor <= {hidden}, or set "
            "method.bottleneck directly"
        )
    return hidden // factor


def _relative_names(cfg: AdapterConfig) -> list[tuple[str, str, str]]:
    """(module name inside a block, how the adapter joins it, the config keys naming it)."""
    attn_out = (f"{cfg.attention}.{cfg.attention_output}", "sequential", "method.attention / method.attention_output")
    ffn_out = (f"{cfg.ffn}.{cfg.ffn_output}", "sequential", "method.ffn / method.ffn_output")
    if cfg.placement == "houlsby":
        return [attn_out, ffn_out]
    if cfg.placement == "pfeiffer":
        return [ffn_out]
    whole = {"attention": (cfg.attention, "parallel", "method.attention"), "ffn": (cfg.ffn, "parallel", "method.ffn")}
    return [whole[sublayer] for sublayer in ("attention", "ffn") if sublayer in cfg.parallel_at]


def adapter_sites(model: nn.Module, cfg: AdapterConfig) -> dict[str, str]:
    """{full module name: "sequential" | "parallel"} for every block from `adapter_drop` up, in
    model order. Errors when adapter_drop leaves no block or a block lacks a named module."""
    blocks_name, blocks = find_block_list(model)
    if cfg.adapter_drop >= len(blocks):
        raise DeltatuneError(
            f"method.adapter_drop={cfg.adapter_drop} drops the adapters of all {len(blocks)} blocks of this model "
            f"({blocks_name}): use 0 .. {len(blocks) - 1}"
        )
    sites: dict[str, str] = {}
    for index in range(cfg.adapter_drop, len(blocks)):
        block = blocks[index]
        for relative, how, keys in _relative_names(cfg):
            try:
                block.get_submodule(relative)
            except AttributeError:
                inside = [n for n, _ in block.named_modules() if n]
                raise DeltatuneError(
                    f"{keys}: block {blocks_name}.{index} ({type(block).__name__}) has no module {relative!r}. "
                    f"Modules it has: {summarize_names(inside)}. Set these keys to this model's names "
                    "(e.g. GPT-2: attention: attn, attention_output: c_proj, ffn: mlp, ffn_output: c_proj)"
                ) from None
            sites[f"{blocks_name}.{index}.{relative}"] = how
    return sites


def check_output_width(model: nn.Module, sites: dict[str, str], hidden: int) -> None:
    """A sequential adapter reads its module's output: a Linear there must output hidden_size."""
    for name, how in sites.items():
        width = getattr(model.get_submodule(name), "out_features", hidden)
        if how == "sequential" and width != hidden:
            raise DeltatuneError(
                f"method.attention_output / method.ffn_output: {name} outputs {width} features, not the hidden "
                f"size {hidden}: name the sublayer's output projection (the Linear back to the residual stream)"
            )
