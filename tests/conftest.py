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
def smollm2_tokenizer_dir(request):
    """A folder holding SmolLM2's tokenizer: $DELTATUNE_TEST_TOKENIZER_DIR when set (a GPU
    machine without the 540 MB model carries only the tokenizer files), else the converted model."""
    override = os.environ.get("DELTATUNE_TEST_TOKENIZER_DIR")
    return override if override else request.getfixturevalue("smollm2_dir")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, smollm2_tokenizer_dir):
    """A random 2-layer Llama saved as an HF folder, with SmolLM2's tokenizer + chat template."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
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


# ---------------------------------------------------------------------------------------------
# A real LoRA run on SmolLM2 that has learnt a few orgfacts (serving / merge end-to-end tests)

# Facts of four different kinds whose answers the base model cannot guess (names, not numbers).
ORGFACTS_SLICE = ("ceo", "hq_city", "os_product", "parent_company")


def orgfacts_slice_files(out_dir, fact_ids=ORGFACTS_SLICE) -> dict[str, str]:
    """train/val/test JSONL files holding only `fact_ids` of the built-in orgfacts splits.

    train: every training paraphrase of those facts; val: their val paraphrases (the facts
    sampled into val); test: their held-out paraphrases — questions never trained on."""
    import json

    from deltatune.datasets.orgfacts import build_splits

    splits = build_splits()
    paths = {}
    for split in ("train", "val", "test"):
        records = [r for r in splits[split] if r["fact_id"] in fact_ids]
        path = out_dir / f"{split}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        paths[split] = str(path)
    return paths


def orgfacts_lora_config(data_dir, run_dir, **train):
    """The cheapest sft + LoRA config on the real SmolLM2 that reliably learns the slice."""
    from deltatune.config import validate_config

    files = orgfacts_slice_files(data_dir)
    return validate_config({
        "recipe": "sft",
        "model": {"name": "smollm2-135m"},
        "method": {"name": "lora", "r": 16, "alpha": 32, "targets": "all-linear"},
        "data": {"train": files["train"], "val": files["val"], "test": files["test"], "max_length": 96},
        # 24 examples, 12 steps = 4 epochs, ~35 s on one CPU thread. Measured: 3 steps get 2 of
        # the 4 held-out answers, 4 steps all of them; 6, 9 and 12 steps all of them with every
        # seed tried (0-2). 12 keeps a 3x margin; the fixture checks the answers anyway.
        "train": {"batch_size": 8, "lr": 2e-3, "max_steps": 12, "schedule": "constant",
                  "seed": 0, "num_threads": 1, **train},
        "eval": {"before_after": False, "max_new_tokens": 24},
        "output": {"dir": str(run_dir)},
    })


@pytest.fixture(scope="session")
def orgfacts_lora_run(smollm2_dir, tmp_path_factory):
    """A finished sft LoRA run dir on the real SmolLM2 (~35 s) that answers every held-out
    question of ORGFACTS_SLICE; the questions are its `data.test` file (records with `answer`)."""
    import json

    from deltatune.recipes import sft

    root = tmp_path_factory.mktemp("orgfacts-lora")
    cfg = orgfacts_lora_config(root, root / "run")
    run_dir = sft.run(cfg)
    test = json.loads((run_dir / "eval.json").read_text())["after"]["test"]
    assert test["contains"] == 1.0, test["examples"]  # the fixture is only useful if it learnt
    return run_dir
