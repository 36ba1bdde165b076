"""Chat templating, the assistant-only loss mask, truncation and text datasets."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest

from deltatune.data.labels import IGNORE_INDEX
from deltatune.data.tokenize import (
    _labels_from_offsets,
    build_sft_dataset,
    build_text_dataset,
    conversation_segments,
    encode_conversation,
    render_chat,
)
from deltatune.errors import DeltatuneError

SMOL_DEFAULT = "You are a helpful AI assistant named SmolLM"


def cfg(**kw):
    base = dict(format="auto", max_length=512, train_on_prompt=False, system_prompt=None, pack=False)
    return SimpleNamespace(**{**base, **kw})


def trained_text(tok, example):
    return tok.decode([t for t, lab in zip(example["input_ids"], example["labels"]) if lab != IGNORE_INDEX])


def trained_spans(example):
    """Number of maximal runs of trained positions."""
    flags = [lab != IGNORE_INDEX for lab in example["labels"]]
    return sum(1 for i, f in enumerate(flags) if f and (i == 0 or not flags[i - 1]))


def test_single_turn_mask_is_answer_plus_end_token(tok):
    ds = build_sft_dataset([{"instruction": "Say hi", "output": "Hello there."}], tok, cfg())
    ex = ds.examples[0]
    assert trained_text(tok, ex) == "Hello there.<|im_end|>"
    assert ex["input_ids"][-1] == tok.eos_token_id and ex["labels"][-1] == tok.eos_token_id
    n_trained = sum(lab != IGNORE_INDEX for lab in ex["labels"])
    assert all(lab == IGNORE_INDEX for lab in ex["labels"][:-n_trained])  # the prompt is masked
    assert ex["labels"][-n_trained:] == ex["input_ids"][-n_trained:]
    # ids == tokenising the template's full rendering (minus its trailing newline)
    conv = [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hello there."}]
    full = render_chat(tok, conv)
    assert full.endswith("<|im_end|>\n")
    assert ex["input_ids"] == tok(full[:-1], add_special_tokens=False)["input_ids"]
    assert SMOL_DEFAULT in tok.decode(ex["input_ids"])  # the template's default system prompt


def test_system_prompt_overrides_default_but_record_system_wins(tok):
    ds = build_sft_dataset([{"instruction": "q", "output": "a"}], tok, cfg(system_prompt="Be brief."))
    text = tok.decode(ds.examples[0]["input_ids"])
    assert "Be brief." in text and SMOL_DEFAULT not in text
    own = build_sft_dataset([{"instruction": "q", "output": "a", "system": "Own."}], tok, cfg(system_prompt="Be brief."))
    text = tok.decode(own.examples[0]["input_ids"])
    assert "Own." in text and "Be brief." not in text


def test_multi_turn_trains_every_assistant_turn(tok):
    record = {"messages": [
        {"role": "user", "content": "u1"}, {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "u2"}, {"role": "assistant", "content": "second answer"},
    ]}
    ex = build_sft_dataset([record], tok, cfg()).examples[0]
    assert trained_text(tok, ex) == "first answer<|im_end|>second answer<|im_end|>"
    assert trained_spans(ex) == 2
    # alpaca history gives the same conversation, hence the same tokens
    alp = {"instruction": "u2", "output": "second answer", "history": [["u1", "first answer"]]}
    assert build_sft_dataset([alp], tok, cfg()).examples[0] == ex


def test_sharegpt_masks_like_messages(tok):
    share = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "an answer"}]}
    ex = build_sft_dataset([share], tok, cfg()).examples[0]
    assert trained_text(tok, ex) == "an answer<|im_end|>"


def test_train_on_prompt_trains_everything(tok):
    ex = build_sft_dataset([{"instruction": "q", "output": "a"}], tok, cfg(train_on_prompt=True)).examples[0]
    assert ex["labels"] == ex["input_ids"]


def test_offset_labels_agree_with_segment_labels(tok):
    conv = [{"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "u2"}, {"role": "assistant", "content": "a two"}]
    segments = conversation_segments(tok, conv)
    assert encode_conversation(tok, conv) == _labels_from_offsets(tok, segments, "".join(t for t, _ in segments))


def test_plain_fallback_without_chat_template(tok):
    plain = copy.deepcopy(tok)
    plain.chat_template = None
    ex = build_sft_dataset([{"instruction": "Say hi", "output": "Hello."}], plain, cfg()).examples[0]
    assert trained_text(plain, ex) == "Hello.<|im_end|>"
    assert "### User:\nSay hi" in plain.decode(ex["input_ids"])


def test_truncation_counts_and_drops(tok):
    long_prompt = {"instruction": "word " * 300, "output": "short"}  # response cut off entirely
    long_answer = {"instruction": "q", "output": "word " * 300}  # response partly kept
    fine = {"instruction": "q", "output": "a"}
    ds = build_sft_dataset([long_prompt, long_answer, fine], tok, cfg(max_length=64))
    assert ds.stats["truncated"] == 2 and ds.stats["dropped"] == 1 and ds.stats["count"] == 2
    assert max(ds.lengths) == 64 and ds.stats["lengths"] == ds.lengths
    assert ds.stats["trained_tokens"] == sum(sum(lab != IGNORE_INDEX for lab in e["labels"]) for e in ds.examples)


def test_all_truncated_or_empty_is_an_error(tok):
    with pytest.raises(DeltatuneError, match="all 2 examples were truncated"):
        build_sft_dataset([{"instruction": "word " * 100, "output": "a"}] * 2, tok, cfg(max_length=16))
    with pytest.raises(DeltatuneError, match="empty"):
        build_sft_dataset([], tok, cfg())


def test_conversation_without_assistant_is_an_error(tok):
    record = {"messages": [{"role": "user", "content": "q"}], "_origin": "c.jsonl:4"}
    with pytest.raises(DeltatuneError, match="c.jsonl:4: the conversation has no assistant turn"):
        build_sft_dataset([record], tok, cfg())


def test_text_dataset_unpacked_and_packed(tok):
    records = [{"text": "alpha beta gamma " * n} for n in (1, 5, 40)]
    docs = [tok(r["text"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for r in records]
    one = build_text_dataset(records, tok, cfg(max_length=32))
    assert [e["input_ids"] for e in one.examples] == [d[:32] for d in docs]
    assert all(e["labels"] == e["input_ids"] for e in one.examples)
    assert one.stats["truncated"] == 1
    packed = build_text_dataset(records, tok, cfg(max_length=32, pack=True))
    stream = [t for d in docs for t in d]
    assert [t for e in packed.examples for t in e["input_ids"]] == stream
    assert all(len(e["input_ids"]) == 32 for e in packed.examples[:-1])
    # the SFT entry point hands text-format data to the text builder
    assert build_sft_dataset(records, tok, cfg(max_length=32)).examples == one.examples
