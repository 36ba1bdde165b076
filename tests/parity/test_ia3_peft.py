"""Our IA3 against HF `peft` (the reference): same vectors -> same logits and gradients (within
1e-5), the same trainable-parameter count, merge/unmerge that keep the function, adapter
folders that load in each other's loaders, and config errors raised before the model changes.

    OMP_NUM_THREADS=1 .venv/bin/pytest -q tests/parity/test_ia3_peft.py
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

peft = pytest.importorskip("peft")
safetensors_torch = pytest.importorskip("safetensors.torch")

from deltatune.errors import DeltatuneError  # noqa: E402
from deltatune.methods.ia3 import METHOD, IA3Config, IA3Linear  # noqa: E402
from deltatune.methods.protocol import InstallContext  # noqa: E402

TOL = dict(rtol=0, atol=1e-5)
PEFT_DEFAULT = dict(task_type="CAUSAL_LM", target_modules=["k_proj", "v_proj", "down_proj"],
                    feedforward_modules=["down_proj"])


def _base(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()


def _ours(tiny_llama_dir, cfg: IA3Config | None = None):
    """(model, cfg, installed): IA3 on a fresh frozen base, vectors set to 1 + 0.1·randn."""
    cfg = cfg or IA3Config()
    model = _base(tiny_llama_dir).requires_grad_(False)
    installed = METHOD.install(model, cfg, InstallContext())
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, vector in sorted(installed.state().items()):
            vector.copy_(1 + 0.1 * torch.randn(vector.shape, generator=gen))
    return model, cfg, installed


def _peft_param(ours_name: str) -> str:
    """Our state name -> the live peft parameter name (adapter `default`)."""
    return METHOD.peft.to_key(ours_name) + ".default"


def _peft_like(tiny_llama_dir, installed):
    """peft's IA3 on a fresh base with the same vectors as `installed`."""
    ref = peft.get_peft_model(_base(tiny_llama_dir), peft.IA3Config(**PEFT_DEFAULT))
    params = dict(ref.named_parameters())
    with torch.no_grad():
        for name, vector in installed.state().items():
            params[_peft_param(name)].copy_(vector)
    return ref.eval()


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def test_same_vectors_give_same_logits_and_gradients(tiny_llama_dir, batch):
    """Logits and d(loss)/d(every vector) equal peft's within 1e-5 absolute."""
    ours, _, installed = _ours(tiny_llama_dir)
    ref = _peft_like(tiny_llama_dir, installed)
    torch.testing.assert_close(_logits(ours, batch), _logits(ref, batch), **TOL)
    ours(**batch, labels=batch["input_ids"]).loss.backward()
    ref(**batch, labels=batch["input_ids"]).loss.backward()
    ref_params = dict(ref.named_parameters())
    vectors = {n: p for n, p in ours.named_parameters() if p.requires_grad}
    assert set(vectors) == set(installed.state())
    assert len(vectors) == 6  # 2 layers x (k_proj, v_proj, down_proj)
    for name, vector in vectors.items():
        assert vector.grad is not None and vector.grad.abs().sum() > 0
        torch.testing.assert_close(vector.grad, ref_params[_peft_param(name)].grad, **TOL)


def test_trainable_count_is_the_formula_and_peft_s(tiny_llama_dir):
    """One entry per input feature of a feedforward Linear, per output feature otherwise."""
    _, _, installed = _ours(tiny_llama_dir)
    formula = sum(w.base_layer.in_features if w.feedforward else w.base_layer.out_features
                  for w in installed.wrappers.values())
    ours = sum(p.numel() for p in installed.trainable())
    ref = peft.get_peft_model(_base(tiny_llama_dir), peft.IA3Config(**PEFT_DEFAULT))
    assert ours == formula == ref.get_nb_trainable_parameters()[0] == 2 * (32 + 32 + 128)
    shapes = {n.rsplit(".", 2)[-2]: tuple(t.shape) for n, t in installed.state().items()}
    assert shapes == {"k_proj": (32, 1), "v_proj": (32, 1), "down_proj": (1, 128)}  # peft's shapes


def test_merge_and_unmerge_keep_the_logits(tiny_llama_dir, batch):
    ours, _, installed = _ours(tiny_llama_dir)
    layer = ours.model.layers[0].self_attn.k_proj
    w0 = layer.base_layer.weight.detach().clone()
    want = _logits(ours, batch)
    installed.merge()
    assert layer.merged
    torch.testing.assert_close(layer.base_layer.weight, w0 * layer.ia3_l, rtol=0, atol=1e-6)
    torch.testing.assert_close(_logits(ours, batch), want, **TOL)
    installed.unmerge()
    torch.testing.assert_close(layer.base_layer.weight, w0, rtol=0, atol=1e-6)
    torch.testing.assert_close(_logits(ours, batch), want, **TOL)


SUBSET_CONFIGS = [
    IA3Config(),
    IA3Config(targets=["q_proj", "v_proj"], feedforward=[]),  # output rescaling only
    # feedforward on layer 0 only: written as full names (peft wants a subset of target_modules)
    IA3Config(targets=["k_proj", "down_proj"], feedforward=[r"re:model\.layers\.0\.mlp\.down_proj"]),
]


@pytest.mark.parametrize("cfg", SUBSET_CONFIGS, ids=["default", "no-feedforward", "full-names"])
def test_our_adapter_folder_loads_in_peft(tiny_llama_dir, batch, tmp_path, cfg):
    ours, cfg, installed = _ours(tiny_llama_dir, cfg)
    tensors = {METHOD.peft.to_key(n): t.contiguous() for n, t in installed.state().items()}
    safetensors_torch.save_file(tensors, str(tmp_path / "adapter_model.safetensors"))
    meta = METHOD.peft.config(ours, cfg, installed, str(tiny_llama_dir))
    (tmp_path / "adapter_config.json").write_text(json.dumps(meta))
    assert meta["peft_type"] == METHOD.peft.peft_type == "IA3"
    assert set(meta["feedforward_modules"]) <= set(meta["target_modules"])  # peft refuses otherwise
    ref = peft.PeftModel.from_pretrained(_base(tiny_llama_dir), tmp_path).eval()
    ref_layers = {n: m for n, m in ref.named_modules() if isinstance(m, peft.tuners.ia3.Linear)}
    assert {n.removeprefix("base_model.model.") for n in ref_layers} == set(installed.wrappers)
    for name, layer in ref_layers.items():  # same modules rescale their input
        assert layer.is_feedforward == installed.wrappers[name.removeprefix("base_model.model.")].feedforward
    torch.testing.assert_close(_logits(ref, batch), _logits(ours, batch), **TOL)


def test_peft_adapter_folder_loads_in_ours(tiny_llama_dir, batch, tmp_path):
    ref = peft.get_peft_model(_base(tiny_llama_dir), peft.IA3Config(**PEFT_DEFAULT))
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "ia3_l" in name:
                p.normal_(1, 0.1)
    ref.eval().save_pretrained(tmp_path)  # a plain peft folder
    raw = json.loads((tmp_path / "adapter_config.json").read_text())
    cfg = METHOD.peft.from_config(raw, str(tmp_path))
    assert sorted(cfg.targets) == ["down_proj", "k_proj", "v_proj"] and cfg.feedforward == ["down_proj"]
    fresh = _base(tiny_llama_dir).requires_grad_(False)
    installed = METHOD.install(fresh, cfg, InstallContext(initialise=False))
    saved = safetensors_torch.load_file(str(tmp_path / "adapter_model.safetensors"))
    installed.load_state({METHOD.peft.from_key(k): v for k, v in saved.items()}, str(tmp_path))
    torch.testing.assert_close(_logits(fresh, batch), _logits(ref, batch), **TOL)


@pytest.mark.parametrize("key,value", [("fan_in_fan_out", True), ("modules_to_save", ["lm_head"]),
                                       ("exclude_modules", ["k_proj"])])
def test_peft_features_we_lack_are_refused(key, value):
    raw = {"peft_type": "IA3", "target_modules": ["k_proj"], "feedforward_modules": [], key: value}
    with pytest.raises(DeltatuneError, match=f"adapter_config.json: {key}="):
        METHOD.peft.from_config(raw, "adapter_config.json")


def _module_types(model) -> dict[str, type]:
    return {name: type(module) for name, module in model.named_modules()}


@pytest.mark.parametrize("cfg,key", [
    (IA3Config(targets=["nope"]), "method.targets"),
    (IA3Config(targets=["k_proj"], feedforward=["down_proj"]), "method.feedforward"),
])
def test_bad_config_errors_before_changing_the_model(tiny_llama_dir, cfg, key):
    model = _base(tiny_llama_dir).requires_grad_(False)
    before = _module_types(model)
    with pytest.raises(DeltatuneError, match=key):
        METHOD.install(model, cfg, InstallContext())
    assert _module_types(model) == before
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("value", [[""], ["  "], []])
def test_config_rejects_empty_targets(value):
    with pytest.raises(ValueError):
        IA3Config(targets=value)
    with pytest.raises(ValueError):
        IA3Config(feedforward=value or [""])


@pytest.mark.parametrize("feedforward", [False, True])
def test_layer_is_the_papers_equation_and_peft_s_with_bias(feedforward):
    """h = l ⊙ (W0 x + b), or W0 (l ⊙ x) + b for feedforward; peft's layer agrees, bias
    included, and merging folds exactly what forward computes."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(6, 5)
    layer = IA3Linear(linear, feedforward=feedforward)
    assert torch.equal(layer.ia3_l, torch.ones(layer.ia3_l.shape))  # adapted == base at step 0
    with torch.no_grad():
        layer.ia3_l.normal_(1, 0.3)
    x = torch.randn(4, 6)
    scale = layer.ia3_l.detach().flatten()
    want = linear(x * scale) if feedforward else scale * linear(x)
    torch.testing.assert_close(layer(x), want)
    ref = peft.tuners.ia3.Linear(linear, "default", config=peft.IA3Config(), is_feedforward=feedforward)
    with torch.no_grad():
        ref.ia3_l["default"].copy_(layer.ia3_l)
    torch.testing.assert_close(layer(x), ref(x), **TOL)
    with torch.no_grad():
        layer.merge()
        torch.testing.assert_close(layer(x), want, **TOL)
        layer.unmerge()
        torch.testing.assert_close(layer(x), want, **TOL)


def test_vector_stays_fp32_over_a_bf16_base():
    base = torch.nn.Linear(8, 4).to(torch.bfloat16)
    for feedforward in (False, True):
        layer = IA3Linear(base, feedforward=feedforward)
        assert layer.ia3_l.dtype == torch.float32
        assert layer(torch.randn(3, 8, dtype=torch.bfloat16)).dtype == torch.bfloat16
