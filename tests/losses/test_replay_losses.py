"""Replay losses: the base model's top-k targets, the soft cross-entropy on them, and
per-example loss weights (data.replay_weight)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from deltatune.data import build_sft_dataset
from deltatune.data.batching import collate
from deltatune.losses.lm import lm_loss, model_lm_loss
from deltatune.replay.teacher import attach_teacher_topk


def _toy(n=2, t=5, v=11, h=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, t, h, generator=gen, requires_grad=True)
    head = torch.nn.Linear(h, v, bias=False)
    labels = torch.randint(0, v, (n, t), generator=gen)
    labels[:, :2] = -100  # prompt
    return hidden, head, labels


def test_one_hot_teacher_on_the_label_is_plain_cross_entropy():
    hidden, head, labels = _toy()
    ids = torch.zeros(*labels.shape, 3, dtype=torch.long)
    probs = torch.zeros(*labels.shape, 3)
    ids[..., 0] = labels.clamp(min=0)
    probs[..., 0] = (labels != -100).float()
    soft, n = lm_loss(hidden, head, labels, ids, probs)
    hard, m = lm_loss(hidden, head, labels)
    assert n == m and soft.item() == pytest.approx(hard.item(), rel=1e-6)


def test_soft_targets_give_the_kl_gradient():
    """-sum p log q differs from KL(p || q) by the teacher's entropy only: same gradient."""
    hidden, head, labels = _toy()
    gen = torch.Generator().manual_seed(1)
    ids = torch.stack([torch.randperm(11, generator=gen)[:4] for _ in range(labels.numel())]).view(*labels.shape, 4)
    probs = torch.softmax(torch.randn(*labels.shape, 4, generator=gen), -1) * (labels != -100)[..., None]
    loss, _ = lm_loss(hidden, head, labels, ids, probs)
    (grad,) = torch.autograd.grad(loss, hidden)

    keep = labels[:, 1:] != -100
    log_q = F.log_softmax(head(hidden[:, :-1][keep]), -1)
    p_full = torch.zeros_like(log_q).scatter_(1, ids[:, 1:][keep], probs[:, 1:][keep])
    kl = (p_full * (p_full.clamp_min(1e-30).log() - log_q)).sum(-1).mean()
    (want,) = torch.autograd.grad(kl, hidden)
    torch.testing.assert_close(grad, want, rtol=1e-5, atol=1e-7)
    entropy = -(p_full * p_full.clamp_min(1e-30).log()).sum(-1).mean()
    assert loss.item() == pytest.approx((kl + entropy).item(), rel=1e-5)


def test_teacher_topk_is_the_base_models_own_distribution(tiny_llama_dir):
    from deltatune.config import DataConfig, ModelConfig
    from deltatune.models.loader import load_causal_lm

    model, tok = load_causal_lm(ModelConfig(name=str(tiny_llama_dir)))
    records = [{"messages": [{"role": "user", "content": f"Say something about {w}."},
                             {"role": "assistant", "content": f"{w} is a fine word, {i} times over."}]}
               for i, w in enumerate(["tea", "rain", "a lighthouse"])]
    data = build_sft_dataset(records, tok, DataConfig(train="x.jsonl", format="messages", max_length=64))
    attach_teacher_topk(model, data, k=5, pad_id=tok.pad_token_id, batch_size=2)
    batch = collate(data.examples, tok.pad_token_id)
    device = next(model.parameters()).device
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits.cpu()
    for row, ex in enumerate(data.examples):
        labelled = [t for t, y in enumerate(ex["labels"]) if y != -100]
        assert labelled and all(ex["teacher_ids"][t] is not None for t in labelled)
        assert all(ex["teacher_ids"][t] is None for t in range(len(ex["labels"])) if t not in labelled)
        for t in labelled:
            top = torch.softmax(logits[row, t - 1].topk(5).values, -1)
            assert ex["teacher_ids"][t] == logits[row, t - 1].topk(5).indices.tolist()
            torch.testing.assert_close(torch.tensor(ex["teacher_probs"][t]), top, rtol=1e-4, atol=1e-6)
    # the training loss on these targets, from the collated batch, equals the hand computation
    loss, n = model_lm_loss(model, {k: v.to(device) for k, v in batch.items()})
    keep = batch["labels"][:, 1:] != -100
    log_q = torch.log_softmax(logits[:, :-1][keep].float(), -1)
    want = -(batch["teacher_probs"][:, 1:][keep] * log_q.gather(1, batch["teacher_ids"][:, 1:][keep])).sum(-1).mean()
    assert n == int(keep.sum()) and loss.item() == pytest.approx(want.item(), rel=1e-4)


def test_example_weights_scale_each_examples_tokens():
    hidden, head, labels = _toy(n=3)
    plain, n = lm_loss(hidden, head, labels)
    same, _ = lm_loss(hidden, head, labels, example_weights=torch.ones(3))
    assert same.item() == pytest.approx(plain.item(), rel=1e-6)
    weighted, m = lm_loss(hidden, head, labels, example_weights=torch.tensor([1.0, 5.0, 1.0]))
    keep = labels[:, 1:] != -100
    token = F.cross_entropy(head(hidden[:, :-1][keep]), labels[:, 1:][keep], reduction="none")
    rows = keep.nonzero(as_tuple=True)[0]
    want = (token * torch.tensor([1.0, 5.0, 1.0])[rows]).sum() / n  # divided by tokens, not weights
    assert m == n and weighted.item() == pytest.approx(want.item(), rel=1e-6)


def test_replay_weight_reaches_the_batches():
    examples = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4, 5], "labels": [-100, 5], "loss_weight": 3.0}]
    batch = collate(examples, pad_id=0)
    assert batch["loss_weights"].tolist() == [1.0, 3.0]
    assert "loss_weights" not in collate(examples[:1], pad_id=0)
