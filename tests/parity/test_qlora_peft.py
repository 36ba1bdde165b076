"""Our QLoRA against the Hugging Face stack (transformers' BitsAndBytesConfig 4-bit loading +
peft's bitsandbytes LoRA layer), on the tiny Llama on the CPU:

- our `load_base` quantises exactly as transformers' `load_in_4bit` (NF4, double quant): same
  packed codes, same block scales, same logits (bit for bit);
- over one quantised model deep-copied for both sides, same A/B -> same logits and gradients
  as peft's `lora.bnb.Linear4bit` (tolerance 1e-5 absolute: both run the same bnb matmul for
  the base, the LoRA path differs only in summation order);
- our saved qlora adapter loads in `peft.PeftModel` over the 4-bit base with the same logits,
  and over the fp base it computes what our adapter computes over that fp base.

    .venv/bin/pytest tests/parity/test_qlora_peft.py
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

peft = pytest.importorskip("peft")
bnb = pytest.importorskip("bitsandbytes")

from transformers import BitsAndBytesConfig  # noqa: E402

from deltatune.config import ModelConfig  # noqa: E402
from deltatune.methods import core  # noqa: E402
from deltatune.methods.modules import wrappers  # noqa: E402
from deltatune.methods.qlora import QloraConfig, load_quantised_base  # noqa: E402
from deltatune.methods.qlora.quantise import decoder_linear_names  # noqa: E402

TOL = dict(rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def hf_4bit(tiny_llama_dir):
    """The tiny Llama quantised by transformers itself (what a peft QLoRA user loads)."""
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.float32)
    # dtype fp32 named: transformers >= 5.2x otherwise keeps the non-quantised tensors (and the
    # quant state's dtype) in bf16 under a quantization_config
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, quantization_config=quant, device_map="cpu",
                                                 dtype=torch.float32).eval()
    # on AVX512-BF16 CPUs bnb repacks a Linear4bit on its first no-grad eval forward and runs a
    # bf16 kernel; our layers keep the one fp32 path (methods/qlora/quantise.py): compare like with like
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
    return model


@pytest.fixture(scope="module")
def ours_4bit(tiny_llama_dir):
    return load_quantised_base(ModelConfig(name=str(tiny_llama_dir)), device="cpu")[0]


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 1000, (2, 11), generator=torch.Generator().manual_seed(0))


def test_load_base_quantises_as_transformers_does(ours_4bit, hf_4bit, ids):
    names = decoder_linear_names(ours_4bit)
    assert len(names) == 2 * 7  # q, k, v, o, gate, up, down per block
    for name in names:
        ours, ref = ours_4bit.get_submodule(name), hf_4bit.get_submodule(name)
        assert type(ours) is type(ref) is bnb.nn.Linear4bit
        qs, ref_qs = ours.weight.quant_state, ref.weight.quant_state
        assert (qs.quant_type, qs.blocksize, qs.nested) == (ref_qs.quant_type, ref_qs.blocksize, ref_qs.nested) == (
            "nf4", 64, True)
        assert torch.equal(ours.weight.data, ref.weight.data)  # packed NF4 codes
        assert torch.equal(qs.absmax, ref_qs.absmax) and torch.equal(qs.state2.absmax, ref_qs.state2.absmax)
        assert torch.equal(qs.offset, ref_qs.offset)
    for model in (ours_4bit, hf_4bit):  # head and embeddings stay unquantised
        assert type(model.lm_head) is torch.nn.Linear and type(model.model.embed_tokens) is torch.nn.Embedding
    with torch.no_grad():
        torch.testing.assert_close(ours_4bit(ids).logits, hf_4bit(ids).logits, rtol=0, atol=0)


def _ours(base, **kw):
    cfg = QloraConfig(r=4, alpha=8, dropout=0.0, **kw)
    model = copy.deepcopy(base)
    core.apply_method(model, cfg)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B.weight"):  # B starts at zero: make the update visible
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return model, cfg


def _peft(base, cfg: QloraConfig, targets):
    ref_cfg = peft.LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=0.0, use_rslora=cfg.rslora,
                              target_modules=targets, task_type="CAUSAL_LM")
    return peft.get_peft_model(copy.deepcopy(base), ref_cfg)


def _peft_name(ours: str) -> str:
    return "base_model.model." + ours.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default.")


@pytest.mark.parametrize("rslora", [False, True])
@pytest.mark.parametrize("targets", ["all-linear", ["q_proj", "v_proj"]])
def test_same_weights_give_same_logits_and_gradients(hf_4bit, ids, rslora, targets):
    ours, cfg = _ours(hf_4bit, rslora=rslora, targets=targets)
    ref = _peft(hf_4bit, cfg, targets)
    peft_layers = [m for m in ref.modules() if isinstance(m, peft.tuners.lora.bnb.Linear4bit)]
    assert len(peft_layers) == len(wrappers(ours)) > 0  # peft's bitsandbytes LoRA layer, not its plain one
    ours_lora = {n: p for n, p in ours.named_parameters() if p.requires_grad}
    ref_lora = {n: p for n, p in ref.named_parameters() if p.requires_grad}
    assert {_peft_name(n) for n in ours_lora} == set(ref_lora)
    with torch.no_grad():
        for n, p in ours_lora.items():
            ref_lora[_peft_name(n)].copy_(p)
    ours.train(), ref.train()
    loss_ours = ours(input_ids=ids, labels=ids).loss
    loss_ref = ref(input_ids=ids, labels=ids).loss
    torch.testing.assert_close(loss_ours, loss_ref, **TOL)
    loss_ours.backward()
    loss_ref.backward()
    for n, p in ours_lora.items():
        assert p.grad is not None and p.grad.abs().sum() > 0
        torch.testing.assert_close(p.grad, ref_lora[_peft_name(n)].grad, **TOL)
    ours.eval(), ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, ref(ids).logits, **TOL)


def test_saved_adapter_loads_in_peft_over_the_4bit_base(ours_4bit, hf_4bit, ids, tmp_path, tiny_llama_dir):
    ours, cfg = _ours(ours_4bit, targets=["q_proj", "k_proj", "down_proj"])
    out = core.save_adapter(ours, cfg, tmp_path / "adapter", tiny_llama_dir)
    meta = json.loads((out / "adapter_config.json").read_text())
    assert meta["peft_type"] == "LORA" and meta["use_dora"] is False  # plain peft LoRA layout
    assert json.loads((out / "deltatune_adapter.json").read_text())["method"]["name"] == "qlora"
    ref = peft.PeftModel.from_pretrained(copy.deepcopy(hf_4bit), out).eval()
    assert sum(isinstance(m, peft.tuners.lora.bnb.Linear4bit) for m in ref.modules()) == len(wrappers(ours)) == 6
    with torch.no_grad():
        torch.testing.assert_close(ref(ids).logits, ours.eval()(ids).logits, **TOL)


def test_saved_adapter_over_the_fp_base_matches_peft(ours_4bit, ids, tmp_path, tiny_llama_dir):
    """peft loads a QLoRA adapter onto the unquantised base too; our adapter over a shared
    (never written, so not quantised) fp base computes the same."""
    ours, cfg = _ours(ours_4bit)
    out = core.save_adapter(ours, cfg, tmp_path / "adapter", tiny_llama_dir)
    ref = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32), out).eval()
    fp_base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    handle = core.load_adapter_handle(fp_base, out)
    with torch.no_grad(), handle.active() as model:
        assert all(type(w.base_layer) is torch.nn.Linear for w in wrappers(model).values())
        torch.testing.assert_close(model(ids).logits, ref(ids).logits, **TOL)


def test_qdora_matches_peft_dora_on_the_4bit_base(hf_4bit, ids, tmp_path, tiny_llama_dir):
    """`dora: true`: DoRA over the dequantised NF4 weight, as peft's bnb layer with use_dora."""
    ours, cfg = _ours(hf_4bit, dora=True, targets=["q_proj", "v_proj", "down_proj"])
    gen = torch.Generator().manual_seed(6)
    with torch.no_grad():  # move m off ||W0|| too, so the magnitude path is exercised
        for name, p in ours.named_parameters():
            if name.endswith("lora_magnitude_vector"):
                p.mul_(1 + 0.1 * torch.randn(p.shape, generator=gen))
    ref = peft.get_peft_model(copy.deepcopy(hf_4bit), peft.LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=0.0, use_dora=True, target_modules=cfg.targets,
        task_type="CAUSAL_LM"))
    ref_params = dict(ref.named_parameters())
    with torch.no_grad():
        for n, p in ours.named_parameters():
            if p.requires_grad:
                key = _peft_name(n).replace(".lora_magnitude_vector", ".lora_magnitude_vector.default.weight")
                ref_params[key].copy_(p)
    ours.train(), ref.train()
    loss_ours, loss_ref = ours(input_ids=ids, labels=ids).loss, ref(input_ids=ids, labels=ids).loss
    torch.testing.assert_close(loss_ours, loss_ref, **TOL)
    loss_ours.backward()
    loss_ref.backward()
    for n, p in ours.named_parameters():
        if p.requires_grad:
            key = _peft_name(n).replace(".lora_magnitude_vector", ".lora_magnitude_vector.default.weight")
            assert p.grad.abs().sum() > 0
            torch.testing.assert_close(p.grad, ref_params[key].grad, **TOL)
    out = core.save_adapter(ours, cfg, tmp_path / "adapter", tiny_llama_dir)
    assert json.loads((out / "adapter_config.json").read_text())["use_dora"] is True
    loaded = peft.PeftModel.from_pretrained(copy.deepcopy(hf_4bit), out).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, ours.eval()(ids).logits, **TOL)
