"""A real deltatune server on a free localhost port, over the tiny Llama with saved adapters.

The server runs in this process on a background thread (uvicorn), so tests can also compute
in-process reference outputs; clients talk to it over real HTTP.

    make_adapter(tiny_llama_dir, root / "p", {"name": "prompt", "num_virtual_tokens": 4}, seed=3)
    make_lora_adapter(tiny_llama_dir, root / "alpha", seed=1)   # LoRA, random non-zero B
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import torch

API_KEY = "test-key-123"

LORA = {"name": "lora", "r": 4, "alpha": 8, "targets": "all-linear"}


def add_noise(scale: float = 0.3) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """The default perturbation: param + scale * N(0, 1) (IA3's ones -> 1 + 0.3·randn, LoRA's
    zero B -> 0.3·randn, prompt embeddings -> their init + 0.3·randn)."""
    return lambda param, gen: param + torch.randn(param.shape, generator=gen) * scale


def make_adapter(tiny_llama_dir, out_dir, method: dict, seed: int,
                 perturb: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
                 select: Callable[[torch.nn.Module], list] | None = None) -> None:
    """A run dir (config.yaml + adapter/) for `method` over the tiny Llama, with its trainable
    tensors set by `perturb` (default `add_noise(0.3)`) from a generator seeded with `seed`,
    so the adapter's outputs differ from the base's.

    `select(model)` picks the tensors to perturb (default: every tensor
    `installed_method(model)[2].trainable()` returns)."""
    from deltatune.config import dump_config, validate_config
    from deltatune.methods.core import apply_method, installed_method, save_adapter
    from deltatune.models.loader import load_causal_lm

    out_dir.mkdir(parents=True)
    val = out_dir / "val.jsonl"
    val.write_text(json.dumps({"instruction": "Hi?", "input": "", "output": "Hello."}) + "\n")
    cfg = validate_config({"model": {"name": str(tiny_llama_dir)}, "data": {"train": str(val)}, "method": method})
    model, tokenizer = load_causal_lm(cfg.model)
    apply_method(model, cfg.method, tokenizer=tokenizer)
    params = select(model) if select is not None else installed_method(model)[2].trainable()
    assert params, f"method {method} has nothing to perturb"
    perturb = perturb or add_noise(0.3)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in params:
            param.copy_(perturb(param.detach().cpu().float(), gen).to(param.dtype))
    dump_config(cfg, out_dir / "config.yaml")  # out_dir is a run dir: config.yaml + adapter/
    save_adapter(model, cfg.method, out_dir / "adapter", tiny_llama_dir)


def make_lora_adapter(tiny_llama_dir, out_dir, seed: int) -> None:
    """A LoRA adapter folder (PEFT layout) with random, non-zero B: outputs differ from base."""
    make_adapter(tiny_llama_dir, out_dir, LORA, seed,
                 perturb=lambda param, gen: torch.randn(param.shape, generator=gen) * 0.3,
                 select=lambda model: [p for n, p in model.named_parameters() if "lora_B" in n])


@pytest.fixture(scope="session")
def adapter_root(tiny_llama_dir, tmp_path_factory):
    """root/{alpha,beta,gamma}: three run dirs with different LoRA adapters."""
    root = tmp_path_factory.mktemp("adapters")
    for seed, name in enumerate(["alpha", "beta", "gamma"], start=1):
        make_lora_adapter(tiny_llama_dir, root / name, seed)
    return root


@pytest.fixture(scope="session")
def adapter_maker():
    """`make_adapter` for test modules (tests/ is not a package, so they cannot import it)."""
    return make_adapter
