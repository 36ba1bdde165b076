"""merge / export on the tiny Llama: what is written loads in bare transformers (or peft) and
computes what the unmerged run computes; a failed verification leaves nothing behind."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from deltatune.errors import DeltatuneError
from deltatune.export.merge import export_peft, load_base_for_merge, merge_run
from deltatune.generation import chat_prompt_ids

PROMPT = [{"role": "user", "content": "What colour is door number 7?"}]


def adapted(run_dir):
    """The run's model as training left it: base + adapter, unmerged."""
    from deltatune.config import load_run_config
    from deltatune.methods.core import load_adapter
    from deltatune.models.loader import load_causal_lm

    model, tokenizer = load_causal_lm(load_run_config(run_dir).model, device="cpu")  # as the exports are compared
    load_adapter(model, run_dir / "adapter")
    return model.eval(), tokenizer


@torch.inference_mode()
def logits_and_greedy(model, ids):
    x = torch.tensor([ids])
    logits = model(input_ids=x).logits[0]
    out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=10, do_sample=False)
    return logits, out[0, len(ids):].tolist()


def assert_same_model(reference, exported, tokenizer):
    ids = chat_prompt_ids(tokenizer, PROMPT)
    ref_logits, ref_tokens = logits_and_greedy(reference, ids)
    exp_logits, exp_tokens = logits_and_greedy(exported, ids)
    assert (ref_logits - exp_logits).abs().max() < 1e-4
    assert ref_tokens == exp_tokens


def test_merged_lora_loads_in_bare_transformers(lora_run, tmp_path):
    out = tmp_path / "merged"
    report = merge_run(lora_run, out)
    assert report.verification["ok"] and report.verification["greedy_match"]
    assert report.verification["prompt_source"].endswith("val.jsonl")  # the run's own val data
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt"))]
    assert not list(tmp_path.glob(".merged.*"))  # no temp folder left
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    assert not any("lora" in name for name, _ in merged.named_parameters())
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template  # chat template travels with the model
    reference, base_tok = adapted(lora_run)
    assert chat_prompt_ids(tokenizer, PROMPT) == chat_prompt_ids(base_tok, PROMPT)
    assert_same_model(reference, merged, tokenizer)


def test_merged_model_differs_from_base(lora_run, tmp_path, tiny_llama_dir):
    merged = AutoModelForCausalLM.from_pretrained(merge_run(lora_run, tmp_path / "m").out_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.inference_mode():
        assert (merged(input_ids=ids).logits - base(input_ids=ids).logits).abs().max() > 1e-2


@pytest.mark.parametrize("method", [{"name": "full"}, {"name": "freeze", "train_last_n_blocks": 1}],
                         ids=["full", "freeze"])
def test_whole_model_runs_export_the_same_way(run_factory, tmp_path, method):
    run = tmp_path / "run"
    run_factory(run, method, seed=3)
    report = merge_run(run, tmp_path / "out")
    assert report.verification["max_abs_diff"] == 0.0  # same tensors, nothing folded
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    reference, tokenizer = adapted(run)
    assert_same_model(reference, exported, tokenizer)


def test_peft_export_loads_in_peft(lora_run, tmp_path, tiny_llama_dir):
    from peft import PeftModel

    report = export_peft(lora_run, tmp_path / "peft")
    assert report.verification["loaded_with"] == "peft"
    assert {p.name for p in (tmp_path / "peft").iterdir()} >= {"adapter_config.json", "adapter_model.safetensors"}
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    loaded = PeftModel.from_pretrained(base, tmp_path / "peft").eval()
    reference, tokenizer = adapted(lora_run)
    ids = torch.tensor([chat_prompt_ids(tokenizer, PROMPT)])
    with torch.inference_mode():
        assert (loaded(input_ids=ids).logits - reference(input_ids=ids).logits).abs().max() < 1e-5


def test_peft_export_of_full_run_is_refused(run_factory, tmp_path):
    run = tmp_path / "run"
    run_factory(run, {"name": "full"})
    with pytest.raises(DeltatuneError, match="no peft layout"):
        export_peft(run, tmp_path / "peft")
    assert not (tmp_path / "peft").exists()


def test_failed_verification_removes_the_export(lora_run, tmp_path, monkeypatch):
    import deltatune.export.merge as merge_mod

    real = merge_mod._bare_load

    def corrupted(folder, dtype):  # simulate a writer bug: one weight off after the round trip
        model = real(folder, dtype)
        with torch.no_grad():
            model.model.layers[0].mlp.down_proj.weight.add_(0.05)
        return model

    monkeypatch.setattr(merge_mod, "_bare_load", corrupted)
    with pytest.raises(DeltatuneError, match="verification failed"):
        merge_run(lora_run, tmp_path / "merged")
    assert list(tmp_path.iterdir()) == []  # neither the export nor its temp folder


def test_existing_output_is_not_overwritten(lora_run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DeltatuneError, match="not empty"):
        merge_run(lora_run, out)
    assert (out / "keep.txt").read_text() == "mine"


def test_merge_loads_the_base_the_way_the_method_says(monkeypatch):
    """The merge seam: a method's own `load_base` (e.g. a quantised base) is what merging folds into."""
    from dataclasses import replace

    from deltatune.methods import registry

    calls = []
    monkeypatch.setitem(registry.METHODS, "lora", replace(registry.METHODS["lora"], load_base=lambda m, device, method_cfg: calls.append((m, device, method_cfg)) or "loaded"))
    cfg = SimpleNamespace(method=SimpleNamespace(name="lora"), model=SimpleNamespace(name="m"))
    assert load_base_for_merge(cfg) == "loaded" and calls == [(cfg.model, "cpu", cfg.method)]


def test_cli_merge_and_export(lora_run, tmp_path, capsys):
    from deltatune.cli import main

    assert main(["merge", str(lora_run), "--out", str(tmp_path / "m")]) == 0
    assert "greedy answers identical" in capsys.readouterr().out
    assert main(["export", str(lora_run), "--format", "peft", "--out", str(tmp_path / "p")]) == 0
    assert main(["merge", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2


@pytest.mark.slow
def test_merge_real_smollm2_lora_within_tolerance(run_factory, smollm2_dir, tmp_path):
    """30 layers of fp32 merge rounding on the real model stay inside the verifier's tolerance."""
    run = tmp_path / "run"
    run_factory(run, {"name": "lora", "r": 8, "alpha": 16, "targets": ["q_proj", "v_proj"]}, seed=1, base=smollm2_dir)
    report = merge_run(run, tmp_path / "merged")
    v = report.verification
    assert v["ok"] and v["max_abs_diff"] < v["tolerance"]
