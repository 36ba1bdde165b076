"""Run dirs for export tests, built without the training recipe: config.yaml + adapter/
holding deterministic, clearly non-trivial weights (LoRA B != 0, full/freeze tensors moved)."""

from __future__ import annotations

import json

import pytest
import torch


def write_val(path) -> str:
    records = [{"instruction": f"What colour is door number {i}?", "input": "", "output": f"Door {i} is red."}
               for i in range(4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def make_run(tiny_llama_dir, run_dir, method: dict, seed: int = 0):
    """A finished-looking run dir on the tiny Llama for `method`; returns its Config."""
    from deltatune.config import dump_config, validate_config
    from deltatune.methods.core import apply_method, save_adapter
    from deltatune.models.loader import load_causal_lm

    run_dir.mkdir(parents=True)
    val = write_val(run_dir.parent / f"{run_dir.name}-val.jsonl")
    cfg = validate_config({"model": {"name": str(tiny_llama_dir)}, "method": method,
                           "data": {"train": val, "val": val}, "output": {"dir": str(run_dir)}})
    model, _ = load_causal_lm(cfg.model)
    apply_method(model, cfg.method)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            if "lora_A" in name:
                continue  # A keeps its random init; B decides whether the update is zero
            scale = 0.3 if "lora_B" in name else 0.02
            param.add_(torch.randn(param.shape, generator=gen).to(param.device) * scale)
    dump_config(cfg, run_dir / "config.yaml")
    save_adapter(model, cfg.method, run_dir / "adapter", tiny_llama_dir)
    return cfg


@pytest.fixture
def run_factory(tiny_llama_dir):
    """run_factory(run_dir, method_dict, seed=0, base=tiny Llama) -> Config; see make_run."""
    return lambda run_dir, method, seed=0, base=None: make_run(base or tiny_llama_dir, run_dir, method, seed)


@pytest.fixture(scope="module")
def lora_run(tiny_llama_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("export") / "lora-run"
    make_run(tiny_llama_dir, run, {"name": "lora", "r": 4, "alpha": 8, "targets": "all-linear"})
    return run
