"""Shared test fixtures: tiny random-weight Llama models and the real embedded SmolLM2.

Most tests use `tiny_llama_dir`: a 2-layer Llama (hidden 64) with the real SmolLM2 tokenizer
and chat template, so data/templating code paths are the real ones while training takes
milliseconds. Tests marked `slow` use `smollm2_dir`, the converted SmolLM2-135M-Instruct.
"""

from __future__ import annotations

import os

import pytest
import torch

# Two cores: one torch thread per test process keeps timings sane and avoids oversubscription.
torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smollm2_dir():
    """Folder of the converted embedded SmolLM2-135M-Instruct (converted once per cache)."""
    from deltatune.models.embedded import embedded_path

    return embedded_path("smollm2-135m")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, smollm2_dir):
    """A random 2-layer Llama saved as an HF folder, with SmolLM2's tokenizer + chat template."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
