"""Partial ("freeze") fine-tuning: train the top N transformer blocks and/or named modules.

    method: {name: freeze, train_last_n_blocks: 2, train_norm: true}
"""

from __future__ import annotations

from torch import nn

from deltatune.errors import DeltatuneError
from deltatune.methods.freeze.config import FreezeConfig
from deltatune.methods.installs import TensorInstall
from deltatune.methods.modules import find_block_list, match_names
from deltatune.methods.protocol import InstallContext, Method

__all__ = ["METHOD", "FreezeConfig", "freeze_parameters"]


def _selected_modules(model: nn.Module, cfg: FreezeConfig) -> list[str]:
    """Full names of the modules whose parameters train."""
    chosen: list[str] = []
    needs_blocks = cfg.train_last_n_blocks or cfg.train_norm
    blocks_name, blocks = find_block_list(model) if needs_blocks else ("", nn.ModuleList())
    if cfg.train_last_n_blocks:
        if cfg.train_last_n_blocks > len(blocks):
            raise DeltatuneError(
                f"method.train_last_n_blocks={cfg.train_last_n_blocks} but the model has only "
                f"{len(blocks)} blocks ({blocks_name})"
            )
        first = len(blocks) - cfg.train_last_n_blocks
        chosen += [f"{blocks_name}.{i}" for i in range(first, len(blocks))]
    if cfg.train_modules:
        names = [n for n, m in model.named_modules() if n and any(True for _ in m.parameters())]
        chosen += match_names(names, cfg.train_modules, key="method.train_modules")
    if cfg.train_embeddings:
        emb = model.get_input_embeddings()
        chosen += [n for n, m in model.named_modules() if m is emb]
    if cfg.train_norm:
        chosen += [
            n for n, m in model.named_modules()
            if "norm" in type(m).__name__.lower() and not n.startswith(blocks_name + ".")
        ]
    return chosen


def freeze_parameters(model: nn.Module, cfg: FreezeConfig) -> list[str]:
    """Names of the parameters the config trains, in model order (tied weights once)."""
    prefixes = tuple(n + "." for n in _selected_modules(model, cfg))
    names = [n for n, _ in model.named_parameters() if n.startswith(prefixes)]
    if not names:
        raise DeltatuneError(f"method (freeze) selects no parameter of {type(model).__name__}; check its keys")
    return names


def install_freeze(model: nn.Module, cfg: FreezeConfig, ctx: InstallContext) -> TensorInstall:
    """Unfreeze exactly the selected parameters (core froze everything first)."""
    return TensorInstall(model, freeze_parameters(model, cfg), ctx)


METHOD = Method(
    name="freeze",
    capacity_hint="more trainable blocks (method.train_last_n_blocks)",
    config_cls=FreezeConfig,
    install=install_freeze,
    trains_base_weights=True,
    summary="the top N blocks and/or named modules train, the rest stays frozen",
)
