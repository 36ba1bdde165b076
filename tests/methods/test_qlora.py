"""QLoRA on the tiny Llama (CPU, bitsandbytes): the layer is the paper's equation over the
dequantised base; install quantises a plain model exactly as load_base does; errors come before
anything changes; merge folds into a dequantised weight and unloads to a plain HF model;
PiSSA / DoRA on the quantised base; the 4-bit weights take <= 30% of their fp32 bytes;
`deltatune merge` of a qlora run dir.

    .venv/bin/pytest tests/methods/test_qlora.py
"""

from __future__ import annotations

import copy
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

bnb = pytest.importorskip("bitsandbytes")

from deltatune.config import ModelConfig, TrainConfig, load_config, validate_config  # noqa: E402
from deltatune.data.batching import collate  # noqa: E402
from deltatune.errors import DeltatuneError  # noqa: E402
from deltatune.losses.lm import model_lm_loss  # noqa: E402
from deltatune.methods import core  # noqa: E402
from deltatune.methods.modules import wrappers  # noqa: E402
from deltatune.methods.qlora import QloraConfig, load_quantised_base, quantised_weight_bytes  # noqa: E402
from deltatune.methods.qlora.layer import QLoRALinear  # noqa: E402
from deltatune.methods.qlora.quantise import bits_of, decoder_linear_names, quantise_linear  # noqa: E402
from deltatune.training.step import OptimiserStep  # noqa: E402

BNB_LAYER = {4: bnb.nn.Linear4bit, 8: bnb.nn.Linear8bitLt}


@pytest.fixture(scope="module")
def plain(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()


@pytest.fixture(scope="module")
def quantised(tiny_llama_dir):
    """bits -> the tiny Llama through the qlora row's load_base (built once per width)."""
    cache = {}

    def get(bits=4):
        if bits not in cache:
            cache[bits] = load_quantised_base(ModelConfig(name=str(tiny_llama_dir)), device="cpu",
                                              method_cfg=QloraConfig(bits=bits))[0]
        return cache[bits]

    return get


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 1000, (2, 9), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def batch():
    gen = torch.Generator().manual_seed(4)
    examples = []
    for length, prompt in ((11, 4), (7, 3)):
        tokens = torch.randint(5, 1000, (length,), generator=gen).tolist()
        examples.append({"input_ids": tokens, "labels": [-100] * prompt + tokens[prompt:]})
    return collate(examples, pad_id=0)


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def _adapted(base, seed=2, **kw):
    """A copy of `base` with qlora applied and B (and a DoRA magnitude) moved off its init."""
    model = copy.deepcopy(base)
    cfg = QloraConfig(**{"r": 4, "alpha": 8, **kw})
    core.apply_method(model, cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B.weight"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("lora_magnitude_vector"):
                p.mul_(1 + 0.1 * torch.randn(p.shape, generator=gen))
    return model, cfg


# ---------------------------------------------------------------------------------------------
# Config and errors


def test_bits_other_than_4_or_8_are_refused_at_config_load():
    with pytest.raises(DeltatuneError, match=r"method\.bits must be one of 4, 8"):
        validate_config({"model": {"name": "x"}, "method": {"name": "qlora", "bits": 3}, "data": {"train": "t.jsonl"}})
    assert QloraConfig(bits=8).bits == 8 and QloraConfig().bits == 4 and QloraConfig().dora is False


def test_ready_config_loads():
    cfg = load_config("configs/smollm2/sft_qlora.yaml")
    assert isinstance(cfg.method, QloraConfig) and cfg.method.bits == 4 and cfg.method.targets == "all-linear"
    assert cfg.train.lr == load_config("configs/smollm2/sft_lora.yaml").train.lr  # the paper: LoRA's recipe


def test_missing_bitsandbytes_says_how_to_install(plain, tiny_llama_dir, monkeypatch):
    model = copy.deepcopy(plain)
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # `import bitsandbytes` raises ImportError
    with pytest.raises(DeltatuneError, match=r"pip install 'deltatune\[qlora\]'"):
        core.apply_method(model, QloraConfig())
    with pytest.raises(DeltatuneError, match=r"pip install bitsandbytes"):
        load_quantised_base(ModelConfig(name=str(tiny_llama_dir)), device="cpu")
    assert all(type(model.get_submodule(n)) is torch.nn.Linear for n in decoder_linear_names(model))
    assert all(p.requires_grad for p in model.parameters())  # apply_method restored the flags


@pytest.mark.parametrize("bad, match", [
    ({"targets": "lm_head"}, r"method\.targets .*outside the transformer blocks"),
    ({"targets": "nope_proj"}, r"method\.targets: 'nope_proj' matches no Linear"),
    ({"r": 40}, r"method\.r=40 is larger than"),  # k_proj / v_proj have 32 outputs
    ({"r": 20, "init": "pissa"}, r"method\.r=20 with method\.init=pissa"),  # saved at rank 2r = 40
])
def test_bad_config_fails_before_the_model_changes(plain, bad, match):
    model = copy.deepcopy(plain)
    with pytest.raises(DeltatuneError, match=match):
        core.apply_method(model, QloraConfig(**bad))
    assert not any(bits_of(m) for m in model.modules()) and not wrappers(model)
    torch.testing.assert_close(model.state_dict(), plain.state_dict(), rtol=0, atol=0)


def test_a_base_quantised_to_the_other_width_is_refused(quantised):
    model = copy.deepcopy(quantised(4))
    with pytest.raises(DeltatuneError, match=r"method\.bits=8, but this base's Linears are already quantised to 4"):
        core.apply_method(model, QloraConfig(bits=8))
    assert not wrappers(model)


# ---------------------------------------------------------------------------------------------
# The quantised base


@pytest.mark.parametrize("bits", [4, 8])
def test_install_on_a_plain_model_quantises_as_load_base_does(plain, quantised, ids, bits):
    """All 14 decoder Linears quantised (targets or not), head and embeddings left alone;
    switched off, the model is exactly load_base's quantised base."""
    model = copy.deepcopy(plain)
    core.apply_method(model, QloraConfig(bits=bits, targets=["q_proj", "v_proj"]))
    names = decoder_linear_names(plain)
    assert len(names) == 14 and len(wrappers(model)) == 4
    for name in names:
        module = model.get_submodule(name)
        layer = module.base_layer if isinstance(module, QLoRALinear) else module
        assert type(layer) is BNB_LAYER[bits], name
    assert type(model.lm_head) is torch.nn.Linear and type(model.model.embed_tokens) is torch.nn.Embedding
    if bits == 4:
        qs = model.model.layers[0].mlp.up_proj.weight.quant_state
        assert (qs.quant_type, qs.nested, qs.blocksize) == ("nf4", True, 64)  # NF4 + double quantisation
    else:
        layer = model.model.layers[0].mlp.up_proj
        assert layer.state.has_fp16_weights is False and layer.weight.dtype == torch.int8
    with core.switched_off(model):
        torch.testing.assert_close(_logits(model, ids), _logits(quantised(bits), ids), rtol=0, atol=0)
    assert (_logits(quantised(bits), ids) - _logits(plain, ids)).abs().max() > 1e-4  # really quantised


# The 16 NormalFloat-4 levels (QLoRA paper, appendix E)
NF4 = [-1.0, -0.6962, -0.5251, -0.3949, -0.2844, -0.1848, -0.0911, 0.0,
       0.0796, 0.1609, 0.2461, 0.3379, 0.4407, 0.5626, 0.7230, 1.0]


def test_nf4_with_double_quantisation_by_hand():
    """dequant(W) = q[idx] * c1 per block of 64, c1 = dequant_8bit(c1_q, c2) + offset (double
    quantisation), idx = the nearest NF4 level to W / c1, two 4-bit indices per byte."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 32)
    qs = (base := quantise_linear(linear, 4)).weight.quant_state
    torch.testing.assert_close(qs.code, torch.tensor(NF4), rtol=0, atol=1e-4)
    assert qs.absmax.dtype == torch.uint8 and qs.state2.blocksize == 256  # c1 in 8 bits, one c2 per 256
    c1 = bnb.functional.dequantize_blockwise(qs.absmax, qs.state2) + qs.offset  # (32 * 64 / 64,)
    w = linear.weight.detach().view(-1, 64)  # (blocks, 64)
    torch.testing.assert_close(c1, w.abs().max(dim=1).values, rtol=1e-3, atol=0)
    packed = base.weight.data.flatten()  # (32 * 64 / 2,) uint8
    idx = torch.stack([packed >> 4, packed & 15], dim=1).flatten().long()  # high nibble first
    by_hand = (qs.code[idx].view(-1, 64) * c1[:, None]).view(32, 64)
    torch.testing.assert_close(bnb.functional.dequantize_4bit(base.weight.data, qs), by_hand, rtol=0, atol=0)
    nearest = ((w / c1[:, None]).unsqueeze(-1) - qs.code).abs().argmin(dim=-1).flatten()
    assert (nearest == idx).float().mean() >= 0.99  # a rare midpoint flips on c1's 8-bit rounding


def test_layer_is_the_papers_equation_over_the_dequantised_weight():
    """h = dequant(W0_nf4) x + b + (alpha/r) B A dropout(x), by hand (train mode, dropout on);
    A and B get the gradients of that expression, the packed base none."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 32)
    base = quantise_linear(linear, 4)
    w0 = bnb.functional.dequantize_4bit(base.weight.data, base.weight.quant_state)
    layer = QLoRALinear(base, r=3, alpha=6, dropout=0.5)
    torch.nn.init.normal_(layer.lora_B.weight)
    x = torch.randn(5, 64)
    torch.manual_seed(1)
    got = layer(x)
    torch.manual_seed(1)
    dropped = torch.nn.functional.dropout(x, 0.5, training=True)
    a, b = (t.detach().clone().requires_grad_() for t in (layer.lora_A.weight, layer.lora_B.weight))
    want = x @ w0.T + linear.bias + (6 / 3) * dropped @ a.T @ b.T
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    got.square().sum().backward()
    want.square().sum().backward()
    torch.testing.assert_close(layer.lora_A.weight.grad, a.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.lora_B.weight.grad, b.grad, rtol=1e-5, atol=1e-5)
    assert base.weight.grad is None


def test_8bit_layer_trains_on_the_int8_weight(plain, batch):
    """bits 8: W0 = CB * SCB / 127 (LLM.int8() row scales); a real optimiser step moves A and B
    only (the int8 weight and its scales stay as they are)."""
    model = copy.deepcopy(plain)
    installed = core.apply_method(model, QloraConfig(bits=8, r=4, alpha=8))
    layer = model.model.layers[0].self_attn.q_proj
    cb, scb = layer.base_layer.weight.data.clone(), layer.base_layer.weight.SCB.clone()
    torch.testing.assert_close(layer.base_weight(), cb.float() * scb[:, None] / 127, rtol=0, atol=1e-7)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    stepper = OptimiserStep(model, installed, TrainConfig(lr=1e-2), total_steps=2, loss_fn=model_lm_loss)
    losses = [stepper.step([batch], step).loss for step in (1, 2)]
    assert all(torch.isfinite(torch.tensor(losses)))
    for n, p in model.named_parameters():
        assert torch.equal(before[n], p.detach()) != ("lora_" in n), n
    assert torch.equal(layer.base_layer.weight.data, cb)


def test_bf16_model_computes_in_bf16_with_fp32_adapters(tiny_llama_dir, ids):
    model, _ = load_quantised_base(ModelConfig(name=str(tiny_llama_dir)), device="cpu", dtype="bfloat16")
    installed = core.apply_method(model, QloraConfig())
    layer = model.model.layers[1].mlp.down_proj
    assert layer.base_layer.compute_dtype == torch.bfloat16 and layer.base_weight().dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in installed.trainable())  # master weights
    assert torch.isfinite(_logits(model, ids).float()).all()


# ---------------------------------------------------------------------------------------------
# Merge


@pytest.mark.parametrize("dora", [False, True], ids=["qlora", "qdora"])
def test_merge_folds_into_a_dequantised_weight_and_unloads_to_plain_linears(quantised, plain, ids, tmp_path, dora):
    """merge == unmerged up to rounding, the packed weight untouched; unmerge is exact;
    merge_and_unload leaves nn.Linear everywhere (non-targets dequantised too) with the plain
    base's keys, which bare transformers saves and loads."""
    model, _ = _adapted(quantised(4), dora=dora, targets=["q_proj", "v_proj", "down_proj"])
    packed = model.model.layers[0].self_attn.q_proj.base_layer.weight.data.clone()
    want = _logits(model, ids)
    core.merge(model)
    assert torch.equal(model.model.layers[0].self_attn.q_proj.base_layer.weight.data, packed)
    torch.testing.assert_close(_logits(model, ids), want, rtol=0, atol=1e-5)
    core.unmerge(model)
    torch.testing.assert_close(_logits(model, ids), want, rtol=0, atol=0)
    core.merge_and_unload(model)
    assert not any(bits_of(m) for m in model.modules()) and not wrappers(model)
    assert all(type(model.get_submodule(n)) is torch.nn.Linear for n in decoder_linear_names(plain))
    assert set(model.state_dict()) == set(plain.state_dict())
    merged = _logits(model, ids)
    torch.testing.assert_close(merged, want, rtol=0, atol=1e-5)
    model.save_pretrained(tmp_path / "merged")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    torch.testing.assert_close(_logits(reloaded, ids), merged, rtol=0, atol=0)


def test_8bit_base_refuses_to_merge_and_stays_as_it_was(quantised, ids):
    """LLM.int8() quantises activations too (here: eval mode on the CPU), so no plain weight
    reproduces the layer: merging is refused, nothing changes."""
    model, _ = _adapted(quantised(8), bits=8)
    want = _logits(model, ids)
    model.train()  # bnb's CPU training path dequantises instead: the two differ by that error
    assert (_logits(model, ids) - want).abs().max() > 1e-4
    model.eval()
    for call in (core.merge, core.merge_and_unload):
        with pytest.raises(DeltatuneError, match=r"method\.bits=8 cannot be merged"):
            call(model)
        torch.testing.assert_close(_logits(model, ids), want, rtol=0, atol=0)
    assert len(wrappers(model)) == 14 and not any(w.merged for w in wrappers(model).values())


def test_pissa_on_the_quantised_base(quantised, ids, tmp_path, tiny_llama_dir):
    """init pissa: A, B from the SVD of the *dequantised* W0; the model starts as the quantised
    base; the adapter is saved as the plain rank-2r LoRA it amounts to and reloads the same."""
    base = quantised(4)
    model = copy.deepcopy(base)
    cfg = QloraConfig(r=4, alpha=8, init="pissa")
    core.apply_method(model, cfg)
    torch.testing.assert_close(_logits(model, ids), _logits(base, ids), rtol=0, atol=1e-5)
    layer = model.model.layers[0].mlp.gate_proj
    u, s, vh = torch.linalg.svd(layer.base_weight().float(), full_matrices=False)
    top = (u[:, :4] * s[:4]) @ vh[:4]
    torch.testing.assert_close(layer.scaling * layer.lora_B.weight @ layer.lora_A.weight, top, rtol=0, atol=1e-5)
    with torch.no_grad():
        layer.lora_B.weight.add_(0.05)  # "trained"
    want = _logits(model, ids)
    core.save_adapter(model, cfg, tmp_path / "adapter", tiny_llama_dir)
    fresh = copy.deepcopy(base)
    saved_cfg = core.load_adapter(fresh, tmp_path / "adapter")
    assert (saved_cfg.name, saved_cfg.r, saved_cfg.init) == ("qlora", 8, "default")
    torch.testing.assert_close(_logits(fresh, ids), want, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Memory


@pytest.mark.parametrize("bits", [4, 8])
def test_quantised_weights_take_under_30_percent_of_fp32(plain, quantised, bits):
    numel = sum(plain.get_submodule(n).weight.numel() for n in decoder_linear_names(plain))
    report = quantised_weight_bytes(quantised(bits))
    assert report["layers"] == 14 and report["fp32_bytes"] == 4 * numel
    assert report["by_part"]["packed_weight"] == numel // 2 if bits == 4 else numel
    assert report["quantised_bytes"] == sum(report["by_part"].values())
    assert report["ratio"] <= 0.30, report
    wrapped = copy.deepcopy(quantised(bits))
    core.apply_method(wrapped, QloraConfig(bits=bits))
    assert quantised_weight_bytes(wrapped) == report  # counted inside the LoRA wrappers too


# ---------------------------------------------------------------------------------------------
# deltatune merge of a run dir


def _qlora_run(tiny_llama_dir, run_dir, method: dict):
    """A finished-looking qlora run dir (config.yaml + adapter/, B moved off zero)."""
    from deltatune.config import dump_config

    run_dir.mkdir(parents=True)
    val = run_dir.parent / "val.jsonl"
    val.write_text("".join(f'{{"instruction": "Door {i}?", "input": "", "output": "Door {i} is red."}}\n'
                           for i in range(4)))
    cfg = validate_config({"model": {"name": str(tiny_llama_dir)}, "method": method,
                           "data": {"train": str(val), "val": str(val)}, "output": {"dir": str(run_dir)}})
    model, _ = _adapted(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), **{
        k: v for k, v in method.items() if k != "name"})
    dump_config(cfg, run_dir / "config.yaml")
    core.save_adapter(model, cfg.method, run_dir / "adapter", tiny_llama_dir)
    return cfg


@pytest.mark.parametrize("dora", [False, True], ids=["qlora", "qdora"])
def test_deltatune_merge_of_a_qlora_run(tiny_llama_dir, tmp_path, ids, dora):
    from deltatune.export.merge import load_base_for_merge, merge_run

    run = tmp_path / "run"
    cfg = _qlora_run(tiny_llama_dir, run, {"name": "qlora", "r": 4, "alpha": 8, "dora": dora})
    report = merge_run(run, tmp_path / "merged")
    assert report.verification["ok"] and report.verification["greedy_match"] and report.method == "qlora"
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    keys = set(merged.state_dict())
    assert not [k for k in keys if "lora" in k or "absmax" in k or "quant" in k]
    reference, _ = load_base_for_merge(cfg)  # the quantised base the adapter trained against
    assert bits_of(reference.model.layers[0].self_attn.q_proj) == 4
    core.load_adapter(reference, run / "adapter")
    torch.testing.assert_close(_logits(merged, ids), _logits(reference.eval(), ids), rtol=0, atol=1e-4)


def test_sft_recipe_trains_qlora_and_keeps_the_packed_base(tiny_llama_dir, tmp_path, monkeypatch):
    """The real recipe: the base comes from the row's load_base (quantised before the method),
    the loss falls, the packed weights and everything else frozen stay bit-identical, the base
    is measured switched off (= the quantised base), the adapter is peft's layout."""
    import json

    from deltatune.recipes import sft
    from deltatune.training.metrics import read_metrics

    seen = {}
    real_apply = sft.apply_method

    def spy(model, method_cfg, **kwargs):
        seen["quantised"] = sum(bits_of(m) == 4 for m in model.modules())  # before install: load_base's work
        out = real_apply(model, method_cfg, **kwargs)
        seen["model"] = model
        seen["frozen"] = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
        return out

    monkeypatch.setattr(sft, "apply_method", spy)
    rows = "".join(f'{{"instruction": "What colour is door {i}?", "input": "", "output": "Door {i} is '
                   f'{["red", "blue", "green"][i % 3]}."}}\n' for i in range(24))
    (tmp_path / "train.jsonl").write_text(rows)
    cfg = validate_config({
        "recipe": "sft", "model": {"name": str(tiny_llama_dir)},
        "method": {"name": "qlora", "r": 8, "alpha": 64, "targets": "all-linear"},
        "data": {"train": str(tmp_path / "train.jsonl"), "val": str(tmp_path / "train.jsonl"), "max_length": 64},
        "train": {"batch_size": 4, "lr": 2e-2, "max_steps": 12, "schedule": "constant", "seed": 0, "num_threads": 1},
        "eval": {"before_after": True}, "output": {"dir": str(tmp_path / "run")}})
    run_dir = sft.run(cfg)
    assert seen["quantised"] == 14
    losses = [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl", "train")]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.2, losses
    params = dict(seen["model"].named_parameters())
    assert any(n.endswith("base_layer.weight") for n in seen["frozen"])
    for n, before in seen["frozen"].items():
        assert torch.equal(params[n], before), f"frozen {n} changed"
    ev = json.loads((run_dir / "eval.json").read_text())
    assert ev["before"]["val"]["loss"] > ev["after"]["val"]["loss"]
    assert json.loads((run_dir / "adapter" / "adapter_config.json").read_text())["peft_type"] == "LORA"


# ---------------------------------------------------------------------------------------------
# CUDA (skipped without a GPU)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_quantises_on_the_device_and_merges(tiny_llama_dir, quantised, ids):
    model, _ = load_quantised_base(ModelConfig(name=str(tiny_llama_dir)), device="cuda")
    layer = model.model.layers[0].self_attn.q_proj
    assert layer.weight.device.type == "cuda" and layer.weight.bnb_quantized
    cpu = quantised(4).model.layers[0].self_attn.q_proj
    assert (layer.weight.data.cpu() == cpu.weight.data).float().mean() > 0.99  # the same NF4 codes, ties aside
    core.apply_method(model, QloraConfig(r=4, alpha=8))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B.weight"):
                p.normal_(0, 0.1)
    want = _logits(model, ids.cuda())
    core.merge(model)
    torch.testing.assert_close(_logits(model, ids.cuda()), want, rtol=0, atol=1e-3)
    core.unmerge(model)
    torch.testing.assert_close(_logits(model, ids.cuda()), want, rtol=0, atol=0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_the_quantised_load_lets_go_of_the_fp32_file(tiny_llama_dir, tmp_path, plain, ids):
    """After quantising, no tensor views the memory-mapped fp32 checkpoint any more, so its
    pages leave resident memory (on SmolLM2 ~300 MB); the remaining fp32 tensors keep their
    values and the tied head stays tied."""
    import shutil

    folder = tmp_path / "own-copy"  # a file of its own: other tests' models map the shared one
    shutil.copytree(tiny_llama_dir, folder)
    model = load_quantised_base(ModelConfig(name=str(folder)), device="cpu")[0]
    checkpoints = [str(p) for p in folder.glob("*.safetensors")]
    assert checkpoints
    maps = open("/proc/self/maps").read()
    assert not any(path in maps for path in checkpoints), "the fp32 checkpoint is still mapped"
    assert model.lm_head.weight is model.get_input_embeddings().weight
    torch.testing.assert_close(model.get_input_embeddings().weight, plain.get_input_embeddings().weight, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, load_quantised_base(
            ModelConfig(name=str(tiny_llama_dir)), device="cpu")[0](input_ids=ids).logits, rtol=0, atol=0)


@pytest.mark.parametrize("bits", [4, 8])
def test_replay_sidecar_records_the_quantised_base(quantised, plain, bits):
    """QLoRA's replay is answered by the quantised base: its cache sidecar says so, and says what
    `deltatune estimate` expects for a qlora config, so the estimate picks these answers."""
    from deltatune.config import validate_config
    from deltatune.estimate.replay import expected_base_weights
    from deltatune.replay.answers import base_weights

    assert base_weights(quantised(bits)) == {"dtype": "float32", "quantised_bits": bits}
    assert base_weights(plain) == {"dtype": "float32", "quantised_bits": None}
    cfg = validate_config({"recipe": "sft", "model": {"name": "smollm2-135m"},
                           "method": {"name": "qlora", "bits": bits}, "data": {"train": "builtin:orgfacts/train"}})
    assert expected_base_weights(cfg) == base_weights(quantised(bits))
