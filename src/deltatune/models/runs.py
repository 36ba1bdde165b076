"""Load what a command was pointed at: a training run dir (base + its adapter) or a bare model.

    loaded = load_target("runs/latest")        # base from its config.yaml + runs/latest/adapter
    loaded = load_target("smollm2-135m")        # embedded alias, HF folder or hub id: base only
    loaded.model, loaded.tokenizer, loaded.run_cfg, loaded.base_path, loaded.label

Used by `deltatune eval`, `deltatune generate` and `deltatune chat`: they accept either kind
of target, so the "which one is it" decision lives here once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deltatune.errors import DeltatuneError


@dataclass
class Loaded:
    """A model ready for inference plus where it came from."""

    model: Any
    tokenizer: Any
    run_cfg: Any | None  # the run's resolved `Config`, or None for a bare model
    base_path: str  # resolved base model folder (or hub id)
    label: str  # short human name for tables and logs


def is_run_dir(target: str | Path) -> bool:
    return (Path(target) / "config.yaml").is_file()


def load_target(target: str, device: str | None = None, with_adapter: bool = True) -> Loaded:
    """A run dir (config.yaml inside) -> its base with the trained adapter applied;
    anything else -> the base model `deltatune.models.loader` resolves from that name.

    `device` None: the run's `model.device` (default auto: the GPU when there is one).
    `with_adapter=False` loads a run's base only (after checking the adapter exists): measure
    the "before", then `apply_run_adapter(loaded.model, target)` for the "after", one load."""
    from deltatune.config import ModelConfig, load_run_config
    from deltatune.models.loader import load_causal_lm, resolve_model_path

    if is_run_dir(target):
        run_dir = Path(target)
        cfg = load_run_config(run_dir)
        check_adapter(run_dir, cfg)
        model, tokenizer = load_causal_lm(cfg.model, device=device)
        if with_adapter:
            apply_run_adapter(model, run_dir)
        return Loaded(model, tokenizer, cfg, resolve_model_path(cfg.model.name), run_dir.name or str(run_dir))

    model, tokenizer = load_causal_lm(ModelConfig(name=target), device=device)
    return Loaded(model, tokenizer, None, resolve_model_path(target), Path(target).name or target)


def load_run_as_base(run_dir: str | Path, device, dtype: str):
    """(model, tokenizer): a finished run's base with its adapter merged in — a plain model that a
    new run (DPO, PPO after SFT) trains a fresh method on, and whose switched-off state is the
    SFT model. The run's own base may itself be a run dir (stages chain)."""
    from deltatune.config import load_run_config
    from deltatune.methods.core import merge_and_unload
    from deltatune.models.loader import load_causal_lm

    cfg = load_run_config(run_dir)
    check_adapter(run_dir, cfg)
    model, tokenizer = load_causal_lm(cfg.model, device=device, dtype=dtype)
    apply_run_adapter(model, run_dir)
    try:
        merge_and_unload(model)
    except DeltatuneError as err:
        raise DeltatuneError(f"model.name {run_dir}: cannot continue from this run: {err}") from None
    model.requires_grad_(True)  # a plain model again; apply_method freezes what it must
    return model.eval(), tokenizer


def check_adapter(run_dir: str | Path, cfg=None) -> Path:
    """The run's adapter folder, or a DeltatuneError saying the run has not finished."""
    adapter_dir = Path(run_dir) / "adapter"
    if not adapter_dir.is_dir() or not any(adapter_dir.iterdir()):
        base = f" or evaluate the base model: deltatune eval {cfg.model.name}" if cfg is not None else ""
        raise DeltatuneError(
            f"run dir {run_dir} has no trained adapter yet ({adapter_dir} is missing or empty): "
            f"finish the run (deltatune train {Path(run_dir) / 'config.yaml'} --resume){base}"
        )
    return adapter_dir


def apply_run_adapter(model, run_dir: str | Path) -> None:
    """Apply a run's trained adapter to its (freshly loaded) base model, in place."""
    from deltatune.methods.core import load_adapter

    load_adapter(model, check_adapter(run_dir))
    model.eval()
