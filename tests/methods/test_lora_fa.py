"""LoRA-FA (`method.name: lora_fa`): A frozen at its random init, only B trains; saved as LoRA.

    OMP_NUM_THREADS=1 .venv/bin/pytest -q tests/methods/test_lora_fa.py

Checks: training moves B and never A; the layer and B's gradient are LoRA's with the same
weights (A simply gets none); a saved adapter is a plain LoRA in peft's layout (peft loads it)
that loads back into deltatune as lora_fa with A frozen again, while a plain peft LoRA folder
still loads as lora; config errors name the key; and fewer bytes are saved for backward than
LoRA's (the paper's point, measured as benchmarks/lora_fa_memory.py does).
"""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from deltatune.config import TrainConfig, load_config, validate_config
from deltatune.data.batching import collate
from deltatune.errors import DeltatuneError
from deltatune.forward import all_logits
from deltatune.losses.lm import model_lm_loss
from deltatune.methods import core
from deltatune.methods.lora import LoraConfig
from deltatune.methods.lora_fa import LoraFaConfig
from deltatune.methods.modules import wrappers
from deltatune.training.step import OptimiserStep

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "lora_fa_memory.py"


@pytest.fixture(scope="module")
def base(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()


@pytest.fixture(scope="module")
def batch():
    gen = torch.Generator().manual_seed(4)
    examples = []
    for length, prompt in ((11, 4), (7, 3), (9, 5)):
        tokens = torch.randint(5, 1000, (length,), generator=gen).tolist()
        examples.append({"input_ids": tokens, "labels": [-100] * prompt + tokens[prompt:]})
    return collate(examples, pad_id=0)


def _installed(base, cfg, seed=0):
    model = copy.deepcopy(base)
    torch.manual_seed(seed)
    return model, core.apply_method(model, cfg)


def _move_b(installed, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for w in installed.wrappers.values():
            w.lora_B.weight.copy_(0.05 * torch.randn(w.lora_B.weight.shape, generator=gen))


def test_training_moves_b_and_never_a(base, batch):
    model, installed = _installed(base, LoraFaConfig(r=4, alpha=8))
    layers = installed.wrappers.values()
    assert all(not w.lora_A.weight.requires_grad and w.lora_B.weight.requires_grad for w in layers)
    a0 = {n: w.lora_A.weight.detach().clone() for n, w in installed.wrappers.items()}
    b0 = {n: w.lora_B.weight.detach().clone() for n, w in installed.wrappers.items()}
    model.train()
    stepper = OptimiserStep(model, installed, TrainConfig(lr=1e-2), total_steps=3, loss_fn=model_lm_loss)
    in_optimiser = {id(p) for g in stepper.optimizer.param_groups for p in g["params"]}
    assert in_optimiser == {id(w.lora_B.weight) for w in layers}
    for step in (1, 2, 3):
        stepper.step([batch], step)
    for name, w in installed.wrappers.items():
        assert torch.equal(w.lora_A.weight, a0[name]), f"{name}: A moved"
        assert not torch.equal(w.lora_B.weight, b0[name]), f"{name}: B did not move"


def test_layer_and_b_gradient_are_loras_with_a_frozen(base, batch):
    """Same seed -> LoRA's very draws; same weights -> LoRA's output and B gradient (exactly)."""
    fa, fa_inst = _installed(base, LoraFaConfig(r=4, alpha=8))
    lora, lora_inst = _installed(base, LoraConfig(r=4, alpha=8))
    _move_b(fa_inst), _move_b(lora_inst)
    fa_state, lora_state = fa_inst.state(), lora_inst.state()
    assert set(fa_state) == set(lora_state) and all(torch.equal(fa_state[k], lora_state[k]) for k in fa_state)
    fa.train(), lora.train()
    loss_fa, _ = model_lm_loss(fa, batch)
    loss_lora, _ = model_lm_loss(lora, batch)
    assert torch.equal(loss_fa, loss_lora)
    loss_fa.backward()
    loss_lora.backward()
    for name, w in fa_inst.wrappers.items():
        assert w.lora_A.weight.grad is None
        torch.testing.assert_close(w.lora_B.weight.grad, lora_inst.wrappers[name].lora_B.weight.grad, rtol=0, atol=0)


def test_saved_as_plain_lora_that_peft_loads_and_we_load_back_as_lora_fa(base, batch, tmp_path, tiny_llama_dir):
    peft = pytest.importorskip("peft")
    cfg = LoraFaConfig(r=4, alpha=8)
    model, installed = _installed(base, cfg)
    _move_b(installed)
    with torch.no_grad():
        want = all_logits(model, batch["input_ids"])
    out = core.save_adapter(model, cfg, tmp_path / "adapter", tiny_llama_dir)
    meta = json.loads((out / "adapter_config.json").read_text())
    assert (meta["peft_type"], meta["r"], meta["lora_alpha"], meta["init_lora_weights"]) == ("LORA", 4, 8, True)
    assert json.loads((out / "deltatune_adapter.json").read_text())["method"]["name"] == "lora_fa"

    ref = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), out).eval()
    with torch.no_grad():
        torch.testing.assert_close(ref(input_ids=batch["input_ids"]).logits, want, rtol=0, atol=1e-5)

    fresh = copy.deepcopy(base)
    assert core.load_adapter(fresh, out) == cfg
    with torch.no_grad():
        torch.testing.assert_close(all_logits(fresh, batch["input_ids"]), want, rtol=0, atol=0)
    assert {n for n, p in fresh.named_parameters() if p.requires_grad} == {
        n + ".lora_B.weight" for n in wrappers(fresh)}, "A frozen again after loading"

    (out / "deltatune_adapter.json").unlink()  # now a plain peft LoRA folder: it is lora's
    assert type(core.load_adapter(copy.deepcopy(base), out)) is LoraConfig


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_a_start_product_init_is_refused_naming_the_key(init):
    with pytest.raises(DeltatuneError, match=rf"method\.init: lora_fa keeps A frozen at a random init.*{init}"):
        validate_config({"data": {"train": "x.jsonl"}, "method": {"name": "lora_fa", "init": init}})
    assert validate_config({"data": {"train": "x.jsonl"}, "method": {"name": "lora_fa", "init": "gaussian"}})


def test_low_precision_base_keeps_a_and_b_in_fp32(base, batch):
    model, installed = _installed(copy.deepcopy(base).to(torch.bfloat16), LoraFaConfig(r=4, alpha=8))
    w = next(iter(installed.wrappers.values()))
    assert (w.lora_A.weight.dtype, w.lora_B.weight.dtype, w.base_layer.weight.dtype) == (
        torch.float32, torch.float32, torch.bfloat16)
    loss, _ = model_lm_loss(model.train(), batch)
    loss.backward()
    assert w.lora_B.weight.grad is not None


def test_fewer_bytes_are_saved_for_backward_than_with_lora(base, batch):
    spec = importlib.util.spec_from_file_location("lora_fa_memory", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    saved = {}
    for cfg in (LoraConfig(r=4, alpha=8), LoraFaConfig(r=4, alpha=8)):
        model, _ = _installed(base, cfg)
        saved[cfg.name] = bench.saved_activation_bytes(model.train(), batch, model_lm_loss)
    assert 0 < saved["lora_fa"] < saved["lora"], saved


def test_ready_config_loads_as_lora_fa_at_loras_lr():
    root = Path(__file__).resolve().parents[2] / "configs" / "smollm2"
    cfg = load_config(root / "sft_lora_fa.yaml")
    assert isinstance(cfg.method, LoraFaConfig) and (cfg.method.r, cfg.method.targets) == (16, "all-linear")
    assert cfg.train.lr == load_config(root / "sft_lora.yaml").train.lr
