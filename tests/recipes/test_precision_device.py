"""`model.device` and `model.dtype`: where training runs and the mixed-precision policy.

Every test runs on the CPU; those parametrised over DEVICES also run on CUDA when torch sees
a GPU (the GPU check script runs this file there). What a user relies on:
  - bf16 training learns, keeps the trained weights in fp32 (master weights) and leaves the
    frozen base bit-identical in bf16 (LoRA) / loads fp32 master weights (full fine-tuning);
  - a CUDA run reproduces the CPU run, and resumes exactly;
  - precisions or devices that cannot work fail before anything is written.
"""

from __future__ import annotations

import pytest
import torch

from deltatune.config import validate_config
from deltatune.errors import DeltatuneError
from deltatune.models.device import resolve_device
from deltatune.recipes import sft
from deltatune.training.metrics import read_metrics

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _losses(run_dir) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl", "train")]


def _assert_learns(losses: list[float]) -> None:
    """Mean of the last 5 steps well under the first step's loss: step-to-step noise on this tiny
    random model is ~0.1 nats and its floor ~10.3-10.5 from ~10.9; a loop that does not learn
    stays flat at ~10.9."""
    assert sum(losses[-5:]) / 5 < losses[0] - 0.25, losses


def _model_section(tiny_llama_dir, device: str, dtype: str) -> dict:
    return {"name": str(tiny_llama_dir), "device": device, "dtype": dtype}


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_lora_trains_fp32_adapters_over_a_frozen_bf16_base(make_cfg, capture_model, tiny_llama_dir, device):
    cfg = make_cfg(model=_model_section(tiny_llama_dir, device, "bfloat16"),
                   method={"name": "lora", "r": 8, "alpha": 64, "targets": "all-linear"},
                   train={"max_steps": 40, "lr": 2e-2})
    run_dir = sft.run(cfg)
    losses = _losses(run_dir)
    assert all(torch.isfinite(torch.tensor(losses)))
    _assert_learns(losses)

    params = dict(capture_model["model"].named_parameters())
    lora = {n: p for n, p in params.items() if p.requires_grad}
    assert lora and all(p.dtype == torch.float32 for p in lora.values()), "adapters are fp32 master weights"
    assert all(p.device.type == device for p in params.values())
    for name, before in capture_model["frozen"].items():
        assert params[name].dtype == torch.bfloat16, name  # the base stays stored in bf16
        assert torch.equal(params[name], before), f"frozen {name} changed"
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_full_finetuning_keeps_fp32_master_weights(make_cfg, capture_model, tiny_llama_dir, device):
    cfg = make_cfg(model=_model_section(tiny_llama_dir, device, "bfloat16"), method={"name": "full"},
                   train={"max_steps": 30, "lr": 3e-3})
    _assert_learns(_losses(sft.run(cfg)))
    assert all(p.dtype == torch.float32 for p in capture_model["model"].parameters())


def test_fp16_training_is_refused_before_anything_is_written(make_cfg, tiny_llama_dir, tmp_path):
    cfg = make_cfg(model=_model_section(tiny_llama_dir, "cpu", "float16"))
    with pytest.raises(DeltatuneError, match="bfloat16"):
        sft.run(cfg)
    assert not (tmp_path / "run").exists()


def test_device_key_is_checked_at_load(tiny_llama_dir):
    with pytest.raises(DeltatuneError, match="device"):
        validate_config({"recipe": "sft", "model": {"name": str(tiny_llama_dir), "device": "gpu"},
                         "data": {"train": "x.jsonl"}, "output": {"dir": "r"}})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_asking_for_cuda_without_a_gpu_says_what_to_do(make_cfg, tiny_llama_dir, tmp_path):
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(DeltatuneError, match="model.device=cpu"):
        sft.run(make_cfg(model=_model_section(tiny_llama_dir, "cuda", "float32")))
    assert not (tmp_path / "run").exists()


@needs_cuda
def test_auto_picks_the_gpu():
    assert resolve_device("auto").type == "cuda"


@needs_cuda
def test_a_cuda_run_reproduces_the_cpu_run(make_cfg, tiny_llama_dir):
    """fp32, no dropout: the same seed gives the same losses on both devices (no TF32)."""
    runs = {}
    for device in ("cpu", "cuda"):
        cfg = make_cfg(run=f"run-{device}", model=_model_section(tiny_llama_dir, device, "float32"),
                       method={"name": "lora", "r": 8, "alpha": 64, "dropout": 0.0, "targets": "all-linear"},
                       train={"max_steps": 10, "lr": 2e-2, "log_every": 1})
        runs[device] = _losses(sft.run(cfg))
    assert runs["cuda"] == pytest.approx(runs["cpu"], rel=1e-3, abs=1e-3)


@needs_cuda
def test_cuda_resume_continues_the_run(make_cfg, tiny_llama_dir):
    """Interrupted at step 6 and resumed, a CUDA run (dropout on: the CUDA RNG is restored)
    logs the losses of the uninterrupted run."""
    model = _model_section(tiny_llama_dir, "cuda", "float32")
    method = {"name": "lora", "r": 8, "alpha": 64, "dropout": 0.1, "targets": "all-linear"}
    full = _losses(sft.run(make_cfg(run="full", model=model, method=method,
                                    train={"max_steps": 12, "save_every": 6, "log_every": 1})))
    part = make_cfg(run="part", model=model, method=method, train={"max_steps": 6, "save_every": 6, "log_every": 1})
    sft.run(part)
    resumed = make_cfg(run="part", model=model, method=method, train={"max_steps": 12, "save_every": 6, "log_every": 1})
    run_dir = sft.run(resumed, resume=True)
    assert _losses(run_dir) == pytest.approx(full, rel=1e-5, abs=1e-6)


@needs_cuda
def test_greedy_generation_on_cuda_matches_transformers(tiny_llama_dir):
    from deltatune.config import ModelConfig
    from deltatune.generation import SamplingParams, chat_prompt_ids, generate
    from deltatune.models.loader import load_causal_lm

    model, tokenizer = load_causal_lm(ModelConfig(name=str(tiny_llama_dir)))
    assert next(model.parameters()).device.type == "cuda"
    prompts = [chat_prompt_ids(tokenizer, [{"role": "user", "content": q}]) for q in ("Hi there", "What is 2 + 2?")]
    ours = generate(model, tokenizer, prompts, SamplingParams(max_new_tokens=12))
    for prompt, completion in zip(prompts, ours):
        ids = torch.tensor([prompt], device="cuda")
        ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        expected = ref[0, len(prompt):].tolist()
        assert completion.token_ids == expected[: len(completion.token_ids)]
