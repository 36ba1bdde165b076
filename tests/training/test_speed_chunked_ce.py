"""train.ce_chunk_tokens: the cross-entropy over labelled positions in chunks, each chunk's
logits recomputed in backward, gives the same loss and gradients (fp32, atol 1e-5) and never
holds a (labelled tokens x vocab) tensor, so its peak memory is lower."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from transformers import AutoModelForCausalLM

from deltatune.config import TrainConfig
from deltatune.data.batching import collate
from deltatune.data.packing import collate_packed
from deltatune.errors import DeltatuneError
from deltatune.losses.lm import lm_loss, model_lm_loss
from deltatune.methods import core
from deltatune.methods.registry import METHODS
from deltatune.training.speed import loss_fn_for

TOL = 1e-5


@pytest.fixture(scope="module")
def base(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)


def _examples(n=6, seed=5):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = 20 + 7 * i
        ids = torch.randint(5, 1000, (length,), generator=gen).tolist()
        out.append({"input_ids": ids, "labels": [-100] * (length // 3) + ids[length // 3:], "loss_weight": 1.0 + i % 2,
                    "teacher_ids": [None] * (length // 3) + [torch.randint(0, 1000, (4,), generator=gen).tolist()
                                                             for _ in range(length - length // 3)],
                    "teacher_probs": [None] * (length // 3) + [[0.4, 0.3, 0.2, 0.1]] * (length - length // 3)})
    return out


def _plain(examples):
    return [{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples]


def _run(model, batch, chunk):
    model.zero_grad(set_to_none=True)
    loss, n = model_lm_loss(model, batch, ce_chunk_tokens=chunk)
    loss.backward()
    return loss.detach(), n, {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def _assert_same(a, b):
    assert a[1] == b[1] and a[2].keys() == b[2].keys() and a[2]
    torch.testing.assert_close(a[0], b[0], atol=TOL, rtol=0)
    for name in a[2]:
        torch.testing.assert_close(a[2][name], b[2][name], atol=TOL, rtol=0, msg=name)


@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
@pytest.mark.parametrize("targets", ["hard", "replay"])
def test_same_loss_and_grads_as_one_piece(base, chunk, targets):
    """Every parameter of the full model (the tied embedding / head included)."""
    model = copy.deepcopy(base)
    examples = _examples() if targets == "replay" else _plain(_examples())
    batch = collate(examples, 0)
    _assert_same(_run(model, batch, None), _run(model, batch, chunk))


def test_with_lora_and_packing(base):
    model = copy.deepcopy(base)
    torch.manual_seed(0)
    core.apply_method(model, METHODS["lora"].config_cls(name="lora", r=4, alpha=8, targets="all-linear"))
    with torch.no_grad():
        for p in core.installed_method(model)[2].trainable():
            p.add_(0.05 * torch.randn_like(p))
    examples = _examples()
    _assert_same(_run(model, collate(examples, 0), None), _run(model, collate_packed(examples), 16))


def test_no_labelled_token():
    hidden = torch.randn(2, 5, 8, requires_grad=True)
    loss, n = lm_loss(hidden, torch.nn.Linear(8, 30), torch.full((2, 5), -100), chunk_tokens=4)
    assert n == 0 and loss.item() == 0.0
    loss.backward()


class _Biggest(TorchDispatchMode):
    """The largest tensor (elements) any op produces while active: forward and backward."""

    def __init__(self):
        super().__init__()
        self.biggest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.biggest = max(self.biggest, t.numel())
        return out


def _peak_bytes(fn) -> int:
    """Peak CPU bytes allocated (above the start) while `fn` runs, from the profiler's memory events."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    running = peak = 0
    for _, nbytes in events:
        running += nbytes
        peak = max(peak, running)
    return peak


def _loss_part(hidden, head, labels, chunk):
    loss, _ = lm_loss(hidden, head, labels, chunk_tokens=chunk)
    loss.backward()


def test_no_tokens_by_vocab_tensor_and_lower_peak_memory(base):
    """The head and loss over 300 labelled positions of the tiny model's 49k vocabulary: chunked,
    no tensor is bigger than chunk x V, and the peak of the loss's forward + backward is lower."""
    head = copy.deepcopy(base.get_output_embeddings()).requires_grad_(False)
    vocab = head.weight.shape[0]
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(4, 100, head.weight.shape[1], generator=gen, requires_grad=True)
    labels = torch.randint(0, vocab, (4, 100), generator=gen)
    labels[:, :25] = -100
    n = int((labels[:, 1:] != -100).sum())
    sizes = {}
    for chunk in (None, 128):  # 128 x V is bigger than the head's own (V, 64) weight
        with _Biggest() as spy:
            _loss_part(hidden, head, labels, chunk)
        sizes[chunk] = spy.biggest
    assert sizes[None] == n * vocab  # the plain path's (N, V) logits
    assert sizes[128] == 128 * vocab  # one chunk's
    peaks = {chunk: _peak_bytes(lambda: _loss_part(hidden, head, labels, chunk)) for chunk in (None, 128)}
    assert peaks[128] < peaks[None] / 2, peaks


def test_loss_fn_for():
    assert loss_fn_for(TrainConfig(shared_prefix=False)) is model_lm_loss
    assert loss_fn_for(TrainConfig()).keywords == {"ce_chunk_tokens": None, "shared_prefix": True}  # the default
    chunked = loss_fn_for(TrainConfig(ce_chunk_tokens=8, shared_prefix=False))
    assert chunked.keywords == {"ce_chunk_tokens": 8, "shared_prefix": False}
    # the shared prefix needs the KV cache, which gradient checkpointing drops
    assert loss_fn_for(TrainConfig(gradient_checkpointing=True)) is model_lm_loss

    def pair_loss(model, batch):
        return None

    with pytest.raises(DeltatuneError, match="train.ce_chunk_tokens.*pair_loss"):
        loss_fn_for(TrainConfig(ce_chunk_tokens=8), pair_loss)
    with pytest.raises(DeltatuneError, match="ce_chunk_tokens"):
        from deltatune.config import validate_config

        validate_config({"data": {"train": "x.jsonl"}, "train": {"ce_chunk_tokens": 0}})
