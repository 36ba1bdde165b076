"""The bench's pieces against hand computations: FLOPs formulas, the shared batches, the shared
initial adapter, the memory probe, and TRL's view of the same pairs."""

from __future__ import annotations

import pytest
import torch

from deltatune.bench import flops
from deltatune.bench.memory import TrainingPhase
from deltatune.bench.workloads import (WORKLOADS, BenchSpec, canonical_name, prepare_steps, seeded_adapter_init,
                                       step_tokens)
from deltatune.data.labels import IGNORE_INDEX
from deltatune.errors import DeltatuneError

COUNTS = {"body": 1000, "head": 50}


def test_step_flops_by_hand():
    # full: 6 N_body T + 6 N_head L = 6*1000*10 + 6*50*4
    assert flops.step_flops(WORKLOADS["full-sft"], COUNTS, 0, tokens=10, labelled=4) == 60_000 + 1_200
    # lora: (4 N_body + 6 N_adapter) T + 4 N_head L = (4000 + 6*20)*10 + 4*50*4
    assert flops.step_flops(WORKLOADS["lora-sft"], COUNTS, 20, tokens=10, labelled=4) == 41_200 + 800
    assert flops.step_flops(WORKLOADS["qlora-sft"], COUNTS, 20, 10, 4) == flops.step_flops(
        WORKLOADS["lora-sft"], COUNTS, 20, 10, 4)
    # dpo: lora's, plus the reference forward 2 N_body T + 2 N_head L
    assert flops.step_flops(WORKLOADS["dpo"], COUNTS, 20, tokens=10, labelled=4) == 42_000 + 20_000 + 400


def test_model_counts_of_the_tiny_llama(tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    cfg = model.config
    h, i = cfg.hidden_size, cfg.intermediate_size
    kv = cfg.num_key_value_heads * (h // cfg.num_attention_heads)  # k / v projection width
    per_layer = h * h * 2 + h * kv * 2 + h * i * 3  # q, o; k, v; gate, up, down
    assert flops.model_counts(model) == {"body": per_layer * cfg.num_hidden_layers, "head": cfg.vocab_size * h}


def test_matmul_peak_reports_each_size():
    peak = flops.matmul_peak(threads=1, sizes=(64, 128), model_shape=(32, 64, 128), repeats=1)
    assert set(peak["square"]) == {"64", "128"} and peak["gflops"] == max(peak["square"].values()) > 0
    assert peak["model_shape"]["mkn"] == [32, 64, 128] and peak["model_shape"]["gflops"] > 0


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    from deltatune.models.loader import load_tokenizer

    return load_tokenizer(str(tiny_llama_dir))


def test_steps_are_full_batches_in_a_fixed_order(tokenizer, tiny_llama_dir):
    spec = BenchSpec(workload="lora-sft", model=str(tiny_llama_dir), steps=3, warmup=1, batch_size=4)
    steps = prepare_steps(spec, tokenizer)
    assert len(steps) == 4 and all(len(batch) == 4 for batch in steps)
    assert steps == prepare_steps(spec, tokenizer)  # the same every run
    other = prepare_steps(BenchSpec(workload="lora-sft", model=str(tiny_llama_dir), steps=3, warmup=1,
                                    batch_size=4, seed=1), tokenizer)
    assert other != steps
    tokens, labelled = step_tokens(steps[0], "sft")
    assert tokens == sum(len(ex["input_ids"]) for ex in steps[0]) and 0 < labelled < tokens


def test_pairs_share_their_prompt_and_end_on_the_answer(tokenizer, tiny_llama_dir):
    from deltatune.bench.trl_side import _dpo_dataset

    spec = BenchSpec(workload="dpo", model=str(tiny_llama_dir), steps=1, warmup=0, batch_size=2)
    steps = prepare_steps(spec, tokenizer)
    rows = _dpo_dataset(steps)
    for ex, row in zip(steps[0], rows):
        cut = ex["prompt_len"]
        for side in ("chosen", "rejected"):
            ids, labels = ex[f"{side}_input_ids"], ex[f"{side}_labels"]
            assert all(label == IGNORE_INDEX for label in labels[:cut])
            assert all(label != IGNORE_INDEX for label in labels[cut:])  # TRL labels every completion token
            assert row["prompt_ids"] + row[f"{side}_ids"] == ids  # TRL sees the same ids


def test_same_initial_adapter_on_deltatune_and_peft(tiny_llama_dir):
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    from deltatune.methods.core import apply_method
    from deltatune.methods.lora.config import LoraConfig

    ours = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    apply_method(ours, LoraConfig(r=4, alpha=8, dropout=0.0, targets="all-linear"))
    theirs = peft.get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), peft.LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"))
    assert seeded_adapter_init(ours, 3) == seeded_adapter_init(theirs, 3) == 14  # 7 Linears x 2 layers
    a = {canonical_name(n): p for n, p in ours.named_parameters() if p.requires_grad}
    b = {canonical_name(n): p for n, p in theirs.named_parameters() if p.requires_grad}
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.layers.0.self_attn.q_proj.lora_A.weight"],
                           a["model.layers.0.self_attn.k_proj.lora_A.weight"])


def test_canonical_name_strips_peft_wrapping():
    assert canonical_name("base_model.model.model.layers.0.mlp.up_proj.lora_B.default.weight") == \
        "model.layers.0.mlp.up_proj.lora_B.weight"


def test_training_phase_sees_an_allocation():
    phase = TrainingPhase.begin()
    block = torch.ones(16 * 1024 * 1024)  # 64 MiB, written
    mem = phase.end()
    del block
    assert mem["training_growth_mib"] >= 60
    assert mem["whole_peak_mib"] >= mem["training_peak_mib"] >= mem["setup_rss_mib"] + 60


def test_spec_rejects_bad_values(tiny_llama_dir):
    with pytest.raises(DeltatuneError, match="--batch-size"):
        BenchSpec(workload="lora-sft", model=str(tiny_llama_dir), batch_size=0)
    with pytest.raises(DeltatuneError, match="unknown"):
        BenchSpec(workload="pretrain", model=str(tiny_llama_dir))
