"""Preference rows: both layouts tokenise to the same pair, only the final answer is labelled,
bad rows fail naming file:line."""

from __future__ import annotations

import json

import pytest

from deltatune.data import load_records
from deltatune.data.labels import IGNORE_INDEX
from deltatune.data.preference import build_preference_dataset, collate_pairs
from deltatune.errors import DeltatuneError


class Data:
    max_length = 128
    system_prompt = "You are terse."


@pytest.fixture
def tok(tiny_llama_dir):
    from deltatune.models.loader import load_tokenizer

    return load_tokenizer(str(tiny_llama_dir))


def _write(tmp_path, rows):
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_plain_and_conversational_layouts_give_the_same_tokens(tmp_path, tok):
    plain = {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon."}
    explicit = {"prompt": [{"role": "user", "content": "Capital of France?"}],
                "chosen": [{"role": "assistant", "content": "Paris."}],
                "rejected": [{"role": "assistant", "content": "Lyon."}]}
    implicit = {"chosen": [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris."}],
                "rejected": [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Lyon."}]}
    built = [build_preference_dataset(load_records(_write(tmp_path, [row])), tok, Data())[0]
             for row in (plain, explicit, implicit)]
    assert built[0] == built[1] == built[2]


def test_only_the_final_answer_is_labelled(tmp_path, tok):
    row = {"chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"},
                      {"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris."}],
           "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"},
                        {"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Lyon."}]}
    pair = build_preference_dataset(load_records(_write(tmp_path, [row])), tok, Data())[0]
    labelled = [t for t in pair["chosen_labels"] if t != IGNORE_INDEX]
    assert tok.decode(labelled).strip().startswith("Paris.")
    assert "Hello" not in tok.decode(labelled)
    batch = collate_pairs([pair], tok.pad_token_id)
    assert batch["input_ids"].shape[0] == 2  # chosen row, then rejected row


@pytest.mark.parametrize("row, message", [
    ({"prompt": "q", "chosen": "a"}, "missing required field 'rejected'"),
    ({"prompt": "q", "rejected": "a"}, "missing required field 'chosen'"),
    ({"prompt": "q", "chosen": "same", "rejected": "same "}, "are the same answer"),
    ({"chosen": "a", "rejected": "b"}, "missing required field 'prompt'"),
    ({"prompt": "q", "chosen": "a", "rejected": [{"role": "assistant", "content": "b"}]}, "both be strings"),
])
def test_bad_rows_name_file_and_line(tmp_path, tok, row, message):
    good = {"prompt": "q", "chosen": "a", "rejected": "b"}
    path = _write(tmp_path, [good, row])
    with pytest.raises(DeltatuneError) as err:
        build_preference_dataset(load_records(path), tok, Data())
    assert message in str(err.value) and f"{path}:2" in str(err.value)
