"""train.packing: a micro-batch as one row of its examples' real tokens gives the padded batch's
loss and gradients (fp32, atol 1e-5), keeps each example to itself (per-example loss of the
packed row == the example run alone, atol 1e-5), and runs attention per example."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from deltatune.config import TrainConfig
from deltatune.data.batching import collate
from deltatune.data.packing import collate_packed, is_packed
from deltatune.data.preference import collate_pairs
from deltatune.errors import DeltatuneError
from deltatune.forward import decoder_hidden, output_head
from deltatune.losses.lm import lm_loss, model_lm_loss
from deltatune.methods import core
from deltatune.methods.registry import METHODS
from deltatune.training import segment_attention
from deltatune.training.objective import LM_OBJECTIVE
from deltatune.training.speed import collate_for, objective_for, prepare_for_training
from deltatune.training.step import OptimiserStep, labelled_tokens

TOL = 1e-5


@pytest.fixture(scope="module")
def base(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)


def _examples(lengths=((11, 4), (6, 2), (9, 5), (3, 1)), seed=4, vocab=1000):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for length, prompt in lengths:
        ids = torch.randint(5, vocab, (length,), generator=gen).tolist()
        out.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return out


def _lora(base, seed=2):
    """A LoRA model (embeddings and head frozen) with B moved off zero so every path matters."""
    model = copy.deepcopy(base)
    torch.manual_seed(seed)  # LoRA's A init draws from the global generator
    core.apply_method(model, METHODS["lora"].config_cls(name="lora", r=4, alpha=8, targets="all-linear"))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in core.installed_method(model)[2].trainable():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model


def _loss_and_grads(model, batch, **kw):
    model.zero_grad(set_to_none=True)
    loss, n = model_lm_loss(model, batch, **kw)
    loss.backward()
    return loss.detach(), n, {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def _assert_same(a, b, tol=TOL):
    assert a[1] == b[1]
    torch.testing.assert_close(a[0], b[0], atol=tol, rtol=0)
    assert a[2].keys() == b[2].keys() and a[2]
    for name in a[2]:
        torch.testing.assert_close(a[2][name], b[2][name], atol=tol, rtol=0, msg=name)


def test_packed_layout():
    examples = _examples()
    batch = collate_packed(examples, pad_id=0)
    total = sum(len(e["input_ids"]) for e in examples)
    assert is_packed(batch) and not is_packed(collate(examples, 0))
    assert batch["input_ids"].shape == (1, total) and batch["attention_mask"].sum() == total
    assert batch["cu_seq_lens"].tolist() == [0, 11, 17, 26, 29]
    assert batch["position_ids"][0, 11:17].tolist() == list(range(6))
    # the first token of each example is never a target: nothing crosses an example boundary
    assert all(batch["labels"][0, start] == -100 for start in (0, 11, 17, 26))
    # the step's units are the padded batch's
    assert labelled_tokens(batch) == labelled_tokens(collate(examples, 0))


def test_replay_weights_and_teacher_targets_are_packed_per_token():
    examples = _examples(((5, 2), (4, 1)))
    examples[1]["loss_weight"] = 0.5
    examples[0]["teacher_ids"] = [None, None, [1, 2], [3, 4], [5, 6]]
    examples[0]["teacher_probs"] = [None, None, [0.6, 0.4], [0.5, 0.5], [0.9, 0.1]]
    batch = collate_packed(examples)
    assert batch["loss_weights"].tolist() == [[1.0] * 5 + [0.5] * 4]
    assert batch["teacher_ids"].shape == (1, 9, 2)
    assert batch["teacher_ids"][0, 3].tolist() == [3, 4] and batch["teacher_probs"][0, 5:].sum() == 0


@pytest.mark.parametrize("attention", ["sdpa", "segments"])
def test_packed_row_equals_padded_batch(base, attention):
    """Same loss and LoRA gradients as the padded batch, with transformers' own packed-sequence
    mask (sdpa) and with the per-segment attention."""
    model = _lora(base)
    examples = _examples()
    padded = _loss_and_grads(model, collate(examples, 0))
    if attention == "segments":
        segment_attention.use_segment_attention(model)
    _assert_same(padded, _loss_and_grads(model, collate_packed(examples)))


def test_packed_row_with_replay_weights_and_teacher_equals_padded(base):
    model = _lora(base)
    segment_attention.use_segment_attention(model)
    examples = _examples()
    gen = torch.Generator().manual_seed(3)
    for ex, w in zip(examples, (1.0, 0.5, 2.0, 1.0)):
        ex["loss_weight"] = w
        ex["teacher_ids"] = [None] + [torch.randint(0, 1000, (3,), generator=gen).tolist()
                                      for _ in ex["input_ids"][1:]]
        ex["teacher_probs"] = [None] + [[0.5, 0.3, 0.2]] * (len(ex["input_ids"]) - 1)
    _assert_same(_loss_and_grads(model, collate(examples, 0)), _loss_and_grads(model, collate_packed(examples)))


def test_no_cross_contamination(base):
    """Each example's loss inside the packed row == that example run alone (atol 1e-5)."""
    model = copy.deepcopy(base).eval()
    segment_attention.use_segment_attention(model)
    examples = _examples()
    batch = collate_packed(examples)
    with torch.no_grad():
        hidden, _ = decoder_hidden(model, batch["input_ids"], None, batch["position_ids"],
                                   segments=batch["cu_seq_lens"])
        edges = batch["cu_seq_lens"].tolist()
        for i, ex in enumerate(examples):
            a, b = edges[i], edges[i + 1]
            packed_part, n = lm_loss(hidden[:, a:b], output_head(model), batch["labels"][:, a:b])
            alone, m = model_lm_loss(model, collate([ex], 0))
            assert n == m and n > 0
            torch.testing.assert_close(packed_part, alone, atol=TOL, rtol=0)
            # and the hidden states themselves: nothing of the other examples leaks in
            own, _ = decoder_hidden(model, torch.tensor([ex["input_ids"]]))
            torch.testing.assert_close(hidden[:, a:b], own, atol=TOL, rtol=0)


def test_segment_attention_runs_per_example(base, monkeypatch):
    """Attention is computed on each example's own length (sum len_i^2), with no mask built."""
    model = copy.deepcopy(base).eval()
    segment_attention.use_segment_attention(model)
    calls = []
    real_sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        calls.append((q.shape[2], k.shape[2], attn_mask is None, kw.get("is_causal")))
        return real_sdpa(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(segment_attention.F, "scaled_dot_product_attention", spy)
    batch = collate_packed(_examples())
    with torch.no_grad():
        model_lm_loss(model, batch)
    layers = model.config.num_hidden_layers
    assert calls == [(n, n, True, True) for n in (11, 6, 9, 3)] * layers


def test_padded_batches_unchanged_under_segment_attention(base):
    """Validation / generation keep the padded path: bit-identical to transformers' SDPA."""
    model = copy.deepcopy(base).eval()
    batch = collate(_examples(), 0)
    with torch.no_grad():
        before, _ = decoder_hidden(model, batch["input_ids"], batch["attention_mask"])
        segment_attention.use_segment_attention(model)
        after, _ = decoder_hidden(model, batch["input_ids"], batch["attention_mask"])
    assert torch.equal(before, after)


def test_optimiser_step_on_packed_batches_equals_padded(base):
    """One optimiser step over 2 micro-batches: same step loss, units and updated weights."""
    cfg = TrainConfig(lr=1e-2, schedule="constant", max_grad_norm=1.0)
    examples = _examples(((11, 4), (6, 2), (9, 5), (3, 1), (8, 3), (5, 2)))
    results = {}
    for mode in ("padded", "packed"):
        model = _lora(base)
        train_cfg = cfg.model_copy(update={"packing": mode == "packed"})
        prepare_for_training(model, train_cfg)
        objective = objective_for(train_cfg, LM_OBJECTIVE)
        installed = core.installed_method(model)[2]
        stepper = OptimiserStep(model, installed, train_cfg, 1, objective.loss_fn, objective.units)
        batches = [objective.collate(examples[:4], 0), objective.collate(examples[4:], 0)]
        result = stepper.step(batches, 1)
        results[mode] = (result, [p.detach().clone() for p in installed.trainable()])
    padded, packed = results["padded"], results["packed"]
    assert padded[0].tokens == packed[0].tokens
    assert padded[0].loss == pytest.approx(packed[0].loss, abs=TOL)
    assert padded[0].grad_norm == pytest.approx(packed[0].grad_norm, abs=TOL)
    assert len(padded[1]) == len(packed[1]) > 0
    for before, after in zip(padded[1], packed[1]):
        torch.testing.assert_close(after, before, atol=TOL, rtol=0)


@pytest.mark.parametrize("name, what", [("prompt", "virtual tokens"), ("prefix", "KV cache"),
                                        ("ptuning", "virtual tokens"), ("ptuning_v2", "KV cache")])
def test_methods_that_change_the_sequence_are_refused(base, name, what):
    from method_examples import EXAMPLES

    model = copy.deepcopy(base)
    core.apply_method(model, METHODS[name].config_cls.model_validate(EXAMPLES[name]))
    with pytest.raises(DeltatuneError, match=rf"train\.packing: the installed method \({name}\).*{what}"):
        prepare_for_training(model, TrainConfig(packing=True))
    assert model.config._attn_implementation != segment_attention.SEGMENT_ATTENTION  # nothing changed


def test_packing_needs_lm_batches():
    with pytest.raises(DeltatuneError, match="train.packing.*collate_pairs"):
        collate_for(TrainConfig(packing=True), collate_pairs)
    assert collate_for(TrainConfig(), collate_pairs) is collate_pairs
    assert collate_for(TrainConfig(packing=True)) is collate_packed


def test_segments_found_from_position_ids_alone(base):
    """A caller that packs with position ids only (no boundaries, no mask, even 2 packed rows)
    still gets attention kept inside each example."""
    model = copy.deepcopy(base).eval()
    segment_attention.use_segment_attention(model)
    examples = _examples(((5, 1), (4, 1), (6, 1), (3, 1)))
    rows = [collate_packed(examples[:2]), collate_packed(examples[2:])]  # 9 tokens each
    ids = torch.cat([r["input_ids"] for r in rows])
    positions = torch.cat([r["position_ids"] for r in rows])
    with torch.no_grad():
        hidden, _ = decoder_hidden(model, ids, None, positions)
        for row, pair in enumerate((examples[:2], examples[2:])):
            start = 0
            for ex in pair:
                n = len(ex["input_ids"])
                own, _ = decoder_hidden(model, torch.tensor([ex["input_ids"]]))
                torch.testing.assert_close(hidden[row:row + 1, start:start + n], own, atol=TOL, rtol=0)
                start += n
