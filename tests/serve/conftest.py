"""A real deltatune server on a free localhost port, over the tiny Llama with two LoRA adapters.

The server runs in this process on a background thread (uvicorn), so tests can also compute
in-process reference outputs; clients talk to it over real HTTP.
"""

from __future__ import annotations

import json

import pytest
import torch

API_KEY = "test-key-123"


def make_lora_adapter(tiny_llama_dir, out_dir, seed: int) -> None:
    """A LoRA adapter folder (PEFT layout) with random, non-zero B: outputs differ from base."""
    from deltatune.config import dump_config, validate_config
    from deltatune.methods.core import apply_method, save_adapter
    from deltatune.models.loader import load_causal_lm

    out_dir.mkdir(parents=True)
    val = out_dir / "val.jsonl"
    val.write_text(json.dumps({"instruction": "Hi?", "input": "", "output": "Hello."}) + "\n")
    cfg = validate_config({"model": {"name": str(tiny_llama_dir)}, "data": {"train": str(val)},
                           "method": {"name": "lora", "r": 4, "alpha": 8, "targets": "all-linear"}})
    model, _ = load_causal_lm(cfg.model)
    apply_method(model, cfg.method)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    dump_config(cfg, out_dir / "config.yaml")  # out_dir is a run dir: config.yaml + adapter/
    save_adapter(model, cfg.method, out_dir / "adapter", tiny_llama_dir)


@pytest.fixture(scope="session")
def adapter_root(tiny_llama_dir, tmp_path_factory):
    """root/{alpha,beta,gamma}: three run dirs with different LoRA adapters."""
    root = tmp_path_factory.mktemp("adapters")
    for seed, name in enumerate(["alpha", "beta", "gamma"], start=1):
        make_lora_adapter(tiny_llama_dir, root / name, seed)
    return root
