"""Bottleneck adapters (`method.name: adapter`): placements, identity at init, hand-computed
outputs, errors, AdapterDrop. The shared checks (training step, save/load, merge refusal,
switching off, hot-swap) are in test_method_matrix.py.

    .venv/bin/pytest tests/methods/test_adapter.py
"""

from __future__ import annotations

import copy

import pytest
import torch
from pydantic import ValidationError
from torch import nn
from transformers import AutoModelForCausalLM

from deltatune.config import load_config
from deltatune.errors import DeltatuneError
from deltatune.forward import all_logits
from deltatune.methods import core
from deltatune.methods.adapter import AdapterConfig, ParallelAdapter, SequentialAdapter
from deltatune.methods.modules import wrappers

H, LAYERS = 64, 2  # the tiny Llama (tests/conftest.py)


@pytest.fixture(scope="module")
def base(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 1000, (2, 9), generator=torch.Generator().manual_seed(1))


def _installed(base, **cfg):
    model = copy.deepcopy(base)
    core.apply_method(model, AdapterConfig(**cfg))
    return model


def _perturb(model, seed=2):
    """Move every adapter tensor off its init (W_up = 0 would hide any wiring mistake)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in core.installed_method(model)[2].trainable():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model


@pytest.mark.parametrize(("cfg", "want"), [
    ({"placement": "houlsby"}, {"self_attn.o_proj": SequentialAdapter, "mlp.down_proj": SequentialAdapter}),
    ({"placement": "pfeiffer"}, {"mlp.down_proj": SequentialAdapter}),
    ({"placement": "parallel"}, {"mlp": ParallelAdapter}),
    ({"placement": "parallel", "parallel_at": ["ffn", "attention"]},
     {"self_attn": ParallelAdapter, "mlp": ParallelAdapter}),
])
def test_placements_put_the_adapters_where_the_papers_do(base, cfg, want):
    model = _installed(base, **cfg)
    found = {name: type(w) for name, w in wrappers(model).items()}
    assert found == {f"model.layers.{i}.{rel}": cls for i in range(LAYERS) for rel, cls in want.items()}
    for w in wrappers(model).values():
        assert w.adapter.down.weight.shape == (H // 16, H) and w.adapter.up.weight.shape == (H, H // 16)
        assert w.adapter.down.bias.shape == (H // 16,) and w.adapter.up.bias.shape == (H,)
        assert w.scaling == (4.0 if cfg["placement"] == "parallel" else 1.0)
    per_adapter = 2 * H * (H // 16) + H // 16 + H
    assert core.count_parameters(model)[0] == LAYERS * len(want) * per_adapter


@pytest.mark.parametrize("cfg", [
    {"placement": "houlsby"}, {"placement": "pfeiffer", "activation": "gelu"},
    {"placement": "parallel", "parallel_at": ["attention", "ffn"], "activation": "silu"},
])
def test_identity_at_init(base, ids, cfg):
    model = _installed(base, **cfg)
    for w in wrappers(model).values():
        assert not w.adapter.up.weight.any() and not w.adapter.up.bias.any() and not w.adapter.down.bias.any()
        assert 0 < w.adapter.down.weight.std() < 0.02  # N(0, 0.01^2), Houlsby's near-identity start
    with torch.no_grad():
        torch.testing.assert_close(all_logits(model, ids), all_logits(base, ids), rtol=0, atol=0)


def test_sequential_wrapper_output_by_hand():
    """y' = y + s (W_up relu(W_down y + b_down) + b_up), y = W x + b, written out with matmuls."""
    torch.manual_seed(0)
    linear = nn.Linear(3, 4)
    wrapper = SequentialAdapter(linear, hidden=4, bottleneck=2, activation="relu", init_std=0.01, scaling=0.5)
    with torch.no_grad():
        wrapper.adapter.down.weight.copy_(torch.tensor([[1.0, -1.0, 0.5, 0.0], [0.0, 2.0, 0.0, -1.0]]))
        wrapper.adapter.down.bias.copy_(torch.tensor([0.1, -0.2]))
        wrapper.adapter.up.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 2.0]]))
        wrapper.adapter.up.bias.copy_(torch.tensor([0.0, 0.5, 0.0, -0.5]))
    x = torch.tensor([[0.3, -1.2, 2.0]])
    y = x @ linear.weight.T + linear.bias
    hidden = torch.clamp(y @ wrapper.adapter.down.weight.T + wrapper.adapter.down.bias, min=0)
    want = y + 0.5 * (hidden @ wrapper.adapter.up.weight.T + wrapper.adapter.up.bias)
    torch.testing.assert_close(wrapper(x), want, rtol=0, atol=1e-6)


class _TupleSublayer(nn.Module):
    """Stands in for an attention module: keyword-only call, (output, weights) tuple back."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, hidden_states, attention_mask=None):
        return self.proj(hidden_states) * attention_mask, "weights"


def test_parallel_wrapper_output_by_hand_with_tuple_output_and_kwargs():
    """y' = F(x) + s (W_up tanh(W_down x + b_down) + b_up): the adapter reads F's *input*; the
    rest of a tuple output passes through."""
    torch.manual_seed(0)
    sublayer = _TupleSublayer()
    wrapper = ParallelAdapter(sublayer, hidden=4, bottleneck=3, activation="tanh", init_std=0.5, scaling=4.0)
    with torch.no_grad():
        wrapper.adapter.up.weight.normal_()
        wrapper.adapter.up.bias.normal_()
    x, mask = torch.randn(2, 5, 4), torch.tensor(2.0)
    out, weights = wrapper(hidden_states=x, attention_mask=mask)
    a = wrapper.adapter
    want = (x @ sublayer.proj.weight.T + sublayer.proj.bias) * mask + 4.0 * (
        torch.tanh(x @ a.down.weight.T + a.down.bias) @ a.up.weight.T + a.up.bias)
    assert weights == "weights"
    torch.testing.assert_close(out, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("cfg", [{"placement": "pfeiffer", "bottleneck": 5},
                                 {"placement": "parallel", "parallel_at": ["attention", "ffn"]}])
def test_trained_adapters_run_generation_and_round_trip(base, ids, tmp_path, tiny_llama_dir, cfg):
    """Parallel attention's kwargs / tuple path under a KV cache, and an explicit bottleneck
    saved and loaded back (model.safetensors, no peft twin)."""
    from deltatune.generation import SamplingParams, generate

    class Tok:
        pad_token_id, eos_token_id = 0, None

        def decode(self, ids, skip_special_tokens=True):
            return " ".join(map(str, ids))

    model = _perturb(_installed(base, **cfg))
    prompts = [[5, 17, 99, 3, 41, 8], [7, 300, 12]]
    cached = [c.token_ids for c in generate(model, Tok(), prompts, SamplingParams(max_new_tokens=5))]
    for prompt, tokens in zip(prompts, cached):
        seq = torch.tensor([prompt])
        with torch.no_grad():
            for token in tokens:
                assert int(all_logits(model, seq)[0, -1].argmax()) == token
                seq = torch.cat([seq, torch.tensor([[token]])], dim=1)
    with torch.no_grad():
        want = all_logits(model, ids)
        assert not torch.allclose(want, all_logits(base, ids), atol=1e-3)
    out = core.save_adapter(model, AdapterConfig(**cfg), tmp_path / "adapter", tiny_llama_dir)
    assert {p.name for p in out.iterdir()} == {"deltatune_adapter.json", "model.safetensors"}
    fresh = copy.deepcopy(base)
    core.load_adapter(fresh, out)
    with torch.no_grad():
        torch.testing.assert_close(all_logits(fresh, ids), want, rtol=0, atol=0)


def test_adapter_drop_leaves_the_lowest_blocks_unadapted_and_cuts_their_backward(base, ids):
    model = _installed(base, placement="houlsby", adapter_drop=1)
    assert set(wrappers(model)) == {"model.layers.1.self_attn.o_proj", "model.layers.1.mlp.down_proj"}
    assert core.count_parameters(model)[0] == 1 * 2 * (2 * H * 4 + 4 + H)
    outputs = []
    hooks = [block.register_forward_hook(lambda m, a, out: outputs.append(out)) for block in model.model.layers]
    try:
        model.train()
        all_logits(model, ids).sum().backward()
    finally:
        for hook in hooks:
            hook.remove()
    block0, block1 = (o[0] if isinstance(o, tuple) else o for o in outputs)
    # nothing below block 1 trains, so autograd records no graph there: backward stops at block 1
    assert not block0.requires_grad and block0.grad_fn is None
    assert block1.requires_grad
    assert all(p.grad is None for p in model.model.layers[0].parameters())


def test_adapter_drop_covering_every_block_is_refused(base):
    model = copy.deepcopy(base)
    with pytest.raises(DeltatuneError, match=r"method\.adapter_drop=2 drops the adapters of all 2 blocks.*0 \.\. 1"):
        core.apply_method(model, AdapterConfig(adapter_drop=2))
    assert not wrappers(model) and all(p.requires_grad for p in model.parameters())


def test_reduction_factor_larger_than_hidden_is_refused(base):
    model = copy.deepcopy(base)
    with pytest.raises(DeltatuneError, match=r"method\.reduction_factor=65 is larger than the model's hidden size 64"):
        core.apply_method(model, AdapterConfig(reduction_factor=65))
    assert not wrappers(model)
    smallest = _installed(base, reduction_factor=64).get_submodule("model.layers.0.mlp.down_proj")
    assert smallest.adapter.down.out_features == 1  # reduction_factor == hidden: bottleneck 1 is allowed


@pytest.mark.parametrize(("cfg", "key"), [
    ({"ffn": "feed_forward"}, "method.ffn"),
    ({"attention_output": "out_proj"}, "method.attention_output"),
    ({"placement": "parallel", "parallel_at": ["attention"], "attention": "attn"}, "method.attention"),
])
def test_blocks_without_the_named_modules_are_refused_naming_the_key(base, cfg, key):
    model = copy.deepcopy(base)
    with pytest.raises(DeltatuneError) as err:
        core.apply_method(model, AdapterConfig(**cfg))
    msg = str(err.value)
    assert key in msg and "model.layers.0" in msg and "o_proj" in msg and "down_proj" in msg  # lists what exists
    assert not wrappers(model)


def test_an_output_projection_of_the_wrong_width_is_refused(base):
    with pytest.raises(DeltatuneError, match="outputs 128 features, not the hidden size 64"):
        core.apply_method(copy.deepcopy(base), AdapterConfig(placement="pfeiffer", ffn_output="up_proj"))


@pytest.mark.parametrize("bad", [
    {"bottleneck": 8, "reduction_factor": 4}, {"bottleneck": 0}, {"reduction_factor": -1},
    {"parallel_at": ["attention"]}, {"placement": "parallel", "parallel_at": []},
    {"placement": "parallel", "parallel_at": ["ffn", "ffn"]}, {"activation": "swish"}, {"placement": "lora"},
    {"scaling": 0}, {"adapter_drop": -1}, {"rank": 8},
])
def test_bad_config_fails_validation(bad):
    with pytest.raises(ValidationError):
        AdapterConfig(**bad)


def test_both_sizes_message_names_the_keys():
    with pytest.raises(ValidationError, match="set method.bottleneck or method.reduction_factor, not both"):
        AdapterConfig(bottleneck=8, reduction_factor=4)


def test_saved_config_round_trips_through_validation():
    cfg = AdapterConfig(placement="houlsby", bottleneck=8, adapter_drop=1)
    assert AdapterConfig.model_validate(cfg.model_dump(mode="json")) == cfg


def test_merge_is_refused_with_the_reason(base, ids):
    model = _perturb(_installed(base))
    with torch.no_grad():
        want = all_logits(model, ids)
    with pytest.raises(DeltatuneError, match="non-linear.*cannot be merged into the base weights; serve the adapter"):
        core.merge(model)
    with pytest.raises(DeltatuneError, match="cannot be merged"):
        core.merge_and_unload(model)
    with torch.no_grad():
        torch.testing.assert_close(all_logits(model, ids), want, rtol=0, atol=0)


def test_fp32_adapters_over_a_bf16_base(base, ids):
    model = _installed(copy.deepcopy(base).to(torch.bfloat16), placement="parallel", parallel_at=["attention", "ffn"])
    for w in wrappers(model).values():
        assert w.adapter.up.weight.dtype == torch.float32
    _perturb(model)
    with torch.no_grad():
        x = torch.randn(1, 3, H, dtype=torch.bfloat16)
        assert model.model.layers[0].mlp(x).dtype == torch.bfloat16  # the residual stream keeps its dtype
        assert torch.isfinite(all_logits(model, ids)).all()


def test_ready_config_loads():
    cfg = load_config("configs/smollm2/sft_adapter.yaml")
    assert isinstance(cfg.method, AdapterConfig) and cfg.method.placement == "houlsby"
