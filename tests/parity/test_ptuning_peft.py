"""Our P-tuning against HF `peft`'s P_TUNING (PromptEncoder), both encoders (LSTM, MLP).

With the same starting weights (peft's prompt encoder copied into ours: embedding + bi-LSTM +
MLP head, or embedding + 3-layer MLP) every comparison below holds within 1e-5 absolute (fp32):
  - logits on the caller's tokens equal peft's `logits[:, P:]` on a right-padded batch;
  - the gradient of the same loss w.r.t. every encoder tensor equals peft's;
  - greedy generation (our left-padded, cached `generate`) equals a greedy loop over peft's
    forward;
  - the trainable counts equal peft's (written out below);
  - adapter folders load in each other's loaders with the same logits: ours folds the encoder's
    output into the (P, H) table, equal to the `prompt_embeddings` peft itself saves, and
    `peft.PeftModel.from_pretrained` loads it; a peft-saved folder loads in `core.load_adapter`
    as `encoder: none` (the table).

    OMP_NUM_THREADS=1 .venv/bin/pytest -q tests/parity/test_ptuning_peft.py
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

peft = pytest.importorskip("peft")

from deltatune.forward import all_logits  # noqa: E402
from deltatune.generation import SamplingParams, generate  # noqa: E402
from deltatune.methods import core  # noqa: E402
from deltatune.methods.ptuning import PTuningConfig  # noqa: E402

TOL = dict(rtol=0, atol=1e-5)
P, H = 3, 64  # virtual tokens; tiny_llama_dir's hidden size (the encoder's hidden width by default)
ENCODERS = ["lstm", "mlp"]


def _base(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()


def _peft(tiny_llama_dir, encoder: str, seed: int = 3):
    torch.manual_seed(seed)
    cfg = peft.PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=P,
                                   encoder_reparameterization_type=encoder.upper())
    return peft.get_peft_model(_base(tiny_llama_dir), cfg).eval()


def _encoder(ref):
    return ref.prompt_encoder["default"]


def _pair(tiny_llama_dir, encoder: str, seed: int = 3):
    ref = _peft(tiny_llama_dir, encoder, seed)
    cfg = PTuningConfig(num_virtual_tokens=P, encoder=encoder)
    ours = _base(tiny_llama_dir)
    core.apply_method(ours, cfg)
    ours.prompt_embeddings.load_state_dict(_encoder(ref).state_dict())  # peft's names and shapes
    return ref, ours, cfg


def _real_position_loss(logits, batch):
    keep = batch["attention_mask"][:, 1:].bool()
    return F.cross_entropy(logits[:, :-1][keep].float(), batch["input_ids"][:, 1:][keep])


@pytest.mark.parametrize("encoder", ENCODERS)
def test_same_weights_give_same_logits(tiny_llama_dir, batch, encoder):
    ref, ours, _ = _pair(tiny_llama_dir, encoder)
    with torch.no_grad():
        want = ref(**batch).logits[:, P:]  # peft also returns logits for its virtual tokens
        torch.testing.assert_close(all_logits(ours, batch["input_ids"], batch["attention_mask"]), want, **TOL)
        torch.testing.assert_close(ours(**batch).logits, want, **TOL)
        assert (want - _base(tiny_llama_dir)(**batch).logits).abs().max() > 1e-3


@pytest.mark.parametrize("encoder", ENCODERS)
def test_same_loss_gives_same_gradients(tiny_llama_dir, batch, encoder):
    ref, ours, _ = _pair(tiny_llama_dir, encoder)
    ours.train(), ref.train()  # dropout 0: train mode changes nothing but is the training path
    loss_ours = _real_position_loss(ours(**batch).logits, batch)
    loss_ref = _real_position_loss(ref(**batch).logits[:, P:], batch)
    torch.testing.assert_close(loss_ours, loss_ref, **TOL)
    loss_ours.backward()
    loss_ref.backward()
    theirs = dict(_encoder(ref).named_parameters())
    mine = dict(ours.prompt_embeddings.named_parameters())
    assert set(mine) == set(theirs)
    for name, param in mine.items():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
        torch.testing.assert_close(param.grad, theirs[name].grad, **TOL)
    assert all(p.grad is None for n, p in ours.named_parameters() if not n.startswith("prompt_embeddings."))


@pytest.mark.parametrize("encoder", ENCODERS)
def test_trainable_count_is_peft_s(tiny_llama_dir, encoder):
    ref, ours, _ = _pair(tiny_llama_dir, encoder)
    trainable, _ = core.count_parameters(ours)
    h = H  # encoder_hidden_size: the model's hidden size by default
    if encoder == "lstm":  # embedding; 2 bi-LSTM layers (4 gates: W_ih, W_hh, two biases); MLP head
        lstm = 2 * (4 * h * H + 4 * h * h + 8 * h) + 2 * (4 * h * 2 * h + 4 * h * h + 8 * h)
        want = P * H + lstm + (2 * h * 2 * h + 2 * h) + (2 * h * H + H)
    else:  # embedding; Linear H->h, h->h, h->H
        want = P * H + (H * h + h) + (h * h + h) + (h * H + H)
    assert trainable == want == ref.get_nb_trainable_parameters()[0]


@pytest.mark.parametrize("encoder", ENCODERS)
def test_greedy_generation_matches_peft_greedy(tiny_llama_dir, encoder):
    """Our left-padded, cached `generate` against a greedy loop over peft's full forward.
    (Not peft's own `generate`: with transformers 5.24 it leaves its own forward's greedy path
    at the 4th token for the LSTM encoder here, top-2 margin 0.2, so it is not the reference.)"""
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    prompts = [tokenizer(t)["input_ids"] for t in ("Hello there, how are you doing today?", "Hi")]
    ref, ours, _ = _pair(tiny_llama_dir, encoder)
    done = generate(ours, tokenizer, prompts, SamplingParams(max_new_tokens=8))
    for prompt, completion in zip(prompts, done):
        ids, want = torch.tensor([prompt]), []
        with torch.no_grad():
            while len(want) < 8 and (not want or want[-1] != tokenizer.eos_token_id):
                want.append(int(ref(input_ids=ids).logits[0, -1].argmax()))
                ids = torch.cat([ids, torch.tensor([[want[-1]]])], dim=1)
        assert completion.token_ids == want
    with core.switched_off(ours):
        plain = generate(ours, tokenizer, prompts, SamplingParams(max_new_tokens=8))
    assert [c.token_ids for c in plain] != [c.token_ids for c in done]


@pytest.mark.parametrize("encoder", ENCODERS)
def test_our_adapter_folder_loads_in_peft(tiny_llama_dir, batch, tmp_path, encoder):
    ref, ours, cfg = _pair(tiny_llama_dir, encoder)
    out = core.save_adapter(ours, cfg, tmp_path / "adapter", tiny_llama_dir)
    meta = json.loads((out / "adapter_config.json").read_text())
    assert meta["peft_type"] == "P_TUNING" and meta["num_virtual_tokens"] == P and meta["token_dim"] == H
    saved = json.loads((out / "deltatune_adapter.json").read_text())["method"]
    assert saved["encoder"] == "none"  # folded
    loaded = peft.PeftModel.from_pretrained(_base(tiny_llama_dir), out).eval()
    torch.testing.assert_close(_encoder(loaded).embedding.weight, ref.get_prompt_embedding_to_save("default"), **TOL)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits[:, P:], ours(**batch).logits, **TOL)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_peft_adapter_folder_loads_in_ours(tiny_llama_dir, batch, tmp_path, encoder):
    ref = _peft(tiny_llama_dir, encoder, seed=7)
    ref.save_pretrained(tmp_path / "peft")
    fresh = _base(tiny_llama_dir)
    cfg = core.load_adapter(fresh, tmp_path / "peft")
    assert cfg == PTuningConfig(num_virtual_tokens=P, encoder="none")
    with torch.no_grad():
        want = ref(**batch).logits[:, P:]
        torch.testing.assert_close(fresh(**batch).logits, want, **TOL)
        torch.testing.assert_close(all_logits(fresh, batch["input_ids"], batch["attention_mask"]), want, **TOL)
