"""deltatune.generation against HF `generate` (greedy parity), plus sampling and stop rules."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from deltatune.errors import DeltatuneError
from deltatune.generation import SamplingParams, _stop_prefix_overlap, chat_prompt_ids, generate

TEXTS = ["Hello there, how are you doing today my friend?", "Hi", "The capital of France is"]


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    return model, tokenizer


@pytest.fixture(scope="module")
def prompts(tiny):
    _, tokenizer = tiny
    return [tokenizer(t)["input_ids"] for t in TEXTS]


def hf_greedy(model, tokenizer, prompts, n):
    tokenizer.padding_side = "left"
    enc = tokenizer.pad({"input_ids": prompts}, return_tensors="pt")
    out = model.generate(**enc, do_sample=False, max_new_tokens=n, min_new_tokens=n)
    return [row[enc["input_ids"].shape[1] :].tolist() for row in out]


def test_greedy_matches_hf_generate_on_left_padded_batch(tiny, prompts):
    model, tokenizer = tiny
    ours = generate(model, tokenizer, prompts, SamplingParams(max_new_tokens=16))
    reference = hf_greedy(model, tokenizer, prompts, 16)
    assert [c.token_ids for c in ours] == reference
    for completion, prompt in zip(ours, prompts):
        assert completion.finish_reason == "length"
        assert (completion.prompt_tokens, completion.completion_tokens) == (len(prompt), 16)
        assert completion.text == tokenizer.decode(completion.token_ids, skip_special_tokens=True)


def test_batching_does_not_change_greedy_output(tiny, prompts):
    model, tokenizer = tiny
    batched = generate(model, tokenizer, prompts, SamplingParams(max_new_tokens=8))
    alone = [generate(model, tokenizer, [p], SamplingParams(max_new_tokens=8))[0] for p in prompts]
    assert [c.token_ids for c in batched] == [c.token_ids for c in alone]


def test_finished_rows_leave_the_batch_without_disturbing_the_rest(tiny, prompts):
    model, tokenizer = tiny
    full = generate(model, tokenizer, prompts, SamplingParams(max_new_tokens=12))
    # per-request params: row 1 stops after 3 tokens, the others run on with a shrunken cache
    params = [SamplingParams(12), SamplingParams(3), SamplingParams(12)]
    mixed = generate(model, tokenizer, prompts, params)
    assert mixed[1].token_ids == full[1].token_ids[:3] and mixed[1].finish_reason == "length"
    assert mixed[0].token_ids == full[0].token_ids
    assert mixed[2].token_ids == full[2].token_ids


def test_eos_from_generation_config_stops(tiny, prompts):
    model, tokenizer = tiny
    full = generate(model, tokenizer, prompts[:1], SamplingParams(max_new_tokens=10))[0]
    eos = full.token_ids[3]
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [saved, eos]
    try:
        done = generate(model, tokenizer, prompts[:1], SamplingParams(max_new_tokens=10))[0]
    finally:
        model.generation_config.eos_token_id = saved
    first = full.token_ids.index(eos)
    assert done.finish_reason == "stop"
    assert done.token_ids == full.token_ids[: first + 1]  # the EOS itself is reported
    assert done.text == tokenizer.decode(full.token_ids[:first], skip_special_tokens=True)


def test_stop_string_cuts_text_and_streaming_never_shows_it(tiny):
    model, tokenizer = tiny
    prompt = tokenizer("The capital of France is")["input_ids"]
    free = generate(model, tokenizer, [prompt], SamplingParams(max_new_tokens=20))[0]
    assert len(free.text) > 12, free.text
    stop = free.text[6:10]
    cut = free.text.index(stop)
    deltas: list[str] = []
    done = generate(
        model, tokenizer, [prompt], SamplingParams(max_new_tokens=20, stop=[stop]),
        on_token=lambda i, d: deltas.append(d),
    )[0]
    assert done.finish_reason == "stop"
    assert done.text == free.text[:cut]
    assert "".join(deltas) == done.text
    assert done.completion_tokens < 20


def test_streamed_deltas_add_up_to_the_text(tiny, prompts):
    model, tokenizer = tiny
    pieces: dict[int, list[str]] = {0: [], 1: [], 2: []}
    done = generate(model, tokenizer, prompts, SamplingParams(max_new_tokens=10), on_token=lambda i, d: pieces[i].append(d))
    for i, completion in enumerate(done):
        assert "".join(pieces[i]) == completion.text
        assert all(pieces[i])  # no empty deltas


def test_same_seed_same_sample_whatever_the_batch(tiny, prompts):
    model, tokenizer = tiny
    sp = SamplingParams(max_new_tokens=12, temperature=1.0, top_p=0.9, seed=123)
    alone = generate(model, tokenizer, [prompts[2]], sp)[0]
    again = generate(model, tokenizer, [prompts[2]], sp)[0]
    mates = [SamplingParams(12, temperature=1.0, seed=7), SamplingParams(12), sp]
    in_batch = generate(model, tokenizer, prompts, mates)[2]
    other_seed = generate(model, tokenizer, [prompts[2]], SamplingParams(12, temperature=1.0, top_p=0.9, seed=124))[0]
    assert alone.token_ids == again.token_ids == in_batch.token_ids
    assert other_seed.token_ids != alone.token_ids


def test_repeated_prompts_share_one_prefill_and_sample_as_if_alone(tiny, prompts):
    """Several sampled replies to one prompt (the probe's N samples) prefill it once; each row
    still samples exactly what it samples alone, and the other prompts are unaffected."""
    model, tokenizer = tiny
    seeded = [SamplingParams(10, temperature=1.0, seed=s) for s in range(4)]
    together = generate(model, tokenizer, [prompts[1]] * 4, seeded)
    alone = [generate(model, tokenizer, [prompts[1]], sp)[0] for sp in seeded]
    assert [c.token_ids for c in together] == [c.token_ids for c in alone]
    assert len({tuple(c.token_ids) for c in together}) > 1  # the seeds differ, the replies too
    mixed = generate(model, tokenizer, [prompts[0], prompts[1], prompts[0]], SamplingParams(8))
    plain = generate(model, tokenizer, [prompts[0], prompts[1]], SamplingParams(8))
    assert [c.token_ids for c in mixed] == [plain[0].token_ids, plain[1].token_ids, plain[0].token_ids]


def test_tiny_top_p_is_greedy(tiny, prompts):
    model, tokenizer = tiny
    greedy = generate(model, tokenizer, prompts, SamplingParams(max_new_tokens=8))
    nucleus = generate(model, tokenizer, prompts, SamplingParams(8, temperature=1.0, top_p=1e-6, seed=0))
    assert [c.token_ids for c in nucleus] == [c.token_ids for c in greedy]


def test_restores_training_mode(tiny, prompts):
    model, tokenizer = tiny
    model.train()
    try:
        generate(model, tokenizer, prompts[:1], SamplingParams(max_new_tokens=2))
        assert model.training
    finally:
        model.eval()


def test_chat_prompt_ids_uses_template_and_falls_back(tiny):
    _, tokenizer = tiny
    messages = [{"role": "user", "content": "What is 2+2?"}]
    ids = chat_prompt_ids(tokenizer, messages)
    rendered = tokenizer.decode(ids)
    assert rendered.endswith("<|im_start|>assistant\n") and "What is 2+2?" in rendered
    saved = tokenizer.chat_template
    tokenizer.chat_template = None
    try:
        plain = tokenizer.decode(chat_prompt_ids(tokenizer, messages))
    finally:
        tokenizer.chat_template = saved
    assert plain == "User: What is 2+2?\nAssistant:"


def test_bad_inputs(tiny):
    model, tokenizer = tiny
    with pytest.raises(DeltatuneError, match="empty"):
        generate(model, tokenizer, [[]], SamplingParams(max_new_tokens=2))
    with pytest.raises(DeltatuneError, match="2 prompts but 1"):
        generate(model, tokenizer, [[1], [2]], [SamplingParams(2)])
    with pytest.raises(DeltatuneError, match="top_p"):
        SamplingParams(4, top_p=0)
    assert generate(model, tokenizer, [], SamplingParams(2)) == []


def test_stop_prefix_overlap():
    assert _stop_prefix_overlap("hello wor", ["world"]) == 3
    assert _stop_prefix_overlap("hello", ["xyz"]) == 0
    assert _stop_prefix_overlap("abc##", ["###", "#"]) == 2
