"""Format detection and conversion to conversations; missing fields are named."""

from __future__ import annotations

import json

import pytest

from deltatune.data.formats import detect_format, to_conversation
from deltatune.data.sources import load_records
from deltatune.errors import DeltatuneError


def test_detect_by_keys():
    assert detect_format([{"instruction": "q", "output": "a"}]) == "alpaca"
    assert detect_format([{"messages": []}]) == "messages"
    assert detect_format([{"conversations": []}]) == "messages"
    assert detect_format([{"text": "t"}]) == "text"
    with pytest.raises(DeltatuneError, match=r"x\.jsonl:1: cannot detect.*\['prompt'\]"):
        detect_format([{"prompt": "p", "_origin": "x.jsonl:1"}])


def test_alpaca_with_input_system_and_history():
    record = {"instruction": "Translate", "input": "hallo", "output": "hello", "system": "Be terse.",
              "history": [["hi", "hey"]]}
    assert to_conversation(record, "alpaca") == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hey"},
        {"role": "user", "content": "Translate\n\nhallo"},
        {"role": "assistant", "content": "hello"},
    ]


def test_openai_messages_and_sharegpt():
    msgs = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    assert to_conversation(msgs, "messages") == msgs["messages"]
    share = {"system": "S", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    assert to_conversation(share, "messages") == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"},
    ]
    with pytest.raises(DeltatuneError, match="unknown from 'robot'"):
        to_conversation({"conversations": [{"from": "robot", "value": "x"}]}, "messages")


def test_text():
    assert to_conversation({"text": "raw"}, "text") == "raw"


def test_missing_field_is_named_with_file_line(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [{"instruction": "q", "output": "a"}, {"instruction": "q2"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    records = load_records(str(path))
    fmt = detect_format(records)
    to_conversation(records[0], fmt)
    with pytest.raises(DeltatuneError) as err:
        to_conversation(records[1], fmt)
    assert f"{path}:2" in str(err.value) and "missing required field 'output'" in str(err.value)


@pytest.mark.parametrize(
    "record,fmt,needle",
    [
        ({"output": "a"}, "alpaca", "'instruction'"),
        ({"messages": [{"role": "user"}]}, "messages", "missing required field 'content'"),
        ({"conversations": [{"value": "x"}]}, "messages", "missing required field 'from'"),
        ({"instruction": "q", "output": "a", "history": [["only one"]]}, "alpaca", "history[0]"),
        ({"instruction": "q", "output": 3}, "alpaca", "'output' must be a string"),
        ({"body": "x"}, "text", "'text'"),
    ],
)
def test_bad_records(record, fmt, needle):
    with pytest.raises(DeltatuneError) as err:
        to_conversation(dict(record, _origin="f.jsonl:7"), fmt)
    assert needle in str(err.value) and "f.jsonl:7" in str(err.value)
