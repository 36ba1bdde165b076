"""lm_loss equals Hugging Face's built-in causal-LM loss (value and gradients)."""

import torch
from transformers import AutoModelForCausalLM

from deltatune.losses.lm import lm_loss, model_lm_loss


def _batch(vocab):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # right padding
    labels = ids.clone()
    labels[:, :5] = -100  # prompt
    labels[mask == 0] = -100
    labels[2, :] = -100  # an example with nothing to learn
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def test_matches_hf_loss_and_grads(tiny_llama_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    batch = _batch(model.config.vocab_size)

    ref = model(**batch).loss
    ref.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    loss, n = model_lm_loss(model, batch)
    loss.backward()
    assert n == int((batch["labels"][:, 1:] != -100).sum())
    assert torch.allclose(loss, ref, atol=1e-5)
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, ref_grads[name], atol=1e-5), name


def test_head_sees_only_labelled_positions():
    seen = []

    def head(x):
        seen.append(x.shape)
        return x @ torch.ones(4, 7)

    hidden = torch.randn(2, 6, 4, requires_grad=True)
    labels = torch.full((2, 6), -100)
    labels[0, 4:] = 1
    loss, n = lm_loss(hidden, head, labels)
    assert n == 2 and seen == [torch.Size([2, 4])]
    loss2, n2 = lm_loss(hidden, head, torch.full((2, 6), -100))
    assert n2 == 0 and loss2.item() == 0.0
    loss2.backward()
