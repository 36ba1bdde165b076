"""load_records: files, built-ins, and the errors users see for bad input."""

from __future__ import annotations

import json

import pytest

from deltatune.data.sources import load_records, origin, public_fields
from deltatune.errors import DeltatuneError


def test_jsonl_records_carry_their_line(write):
    path = write("d.jsonl", '{"text": "a"}\n\n{"text": "b"}\n')
    records = load_records(str(path))
    assert [r["text"] for r in records] == ["a", "b"]
    assert origin(records[1]) == f"{path}:3"  # blank line 2 skipped, numbering kept
    assert public_fields(records[0]) == {"text": "a"}


def test_malformed_jsonl_names_file_line_and_reason(write, tmp_path):
    path = write("bad.jsonl", '{"text": "a"}\n{"text": "b"}\n{"text": "c",,}\n')
    before = sorted(tmp_path.iterdir())
    with pytest.raises(DeltatuneError) as err:
        load_records(str(path))
    message = str(err.value)
    assert f"{path}:3" in message and "malformed JSON" in message
    assert sorted(tmp_path.iterdir()) == before  # nothing written


def test_non_object_row_is_an_error(write):
    path = write("list.jsonl", '{"text": "a"}\n[1, 2]\n')
    with pytest.raises(DeltatuneError, match=r"list\.jsonl:2: each record must be a JSON object, got list"):
        load_records(str(path))


@pytest.mark.parametrize("name,text", [("e.jsonl", "\n\n"), ("e.json", "[]"), ("e.csv", "instruction,output\n"), ("z.csv", "")])
def test_empty_dataset_is_an_error(write, name, text):
    with pytest.raises(DeltatuneError, match="empty"):
        load_records(str(write(name, text)))


def test_json_list_and_wrong_top_level(write):
    good = write("d.json", json.dumps([{"text": "a"}, {"text": "b"}]))
    records = load_records(str(good))
    assert origin(records[1]) == f"{good}[1]"
    with pytest.raises(DeltatuneError, match="list of objects"):
        load_records(str(write("o.json", '{"text": "a"}')))
    with pytest.raises(DeltatuneError, match=r"bad\.json:2: malformed JSON"):
        load_records(str(write("bad.json", '[\n{"text": }]')))


def test_csv_rows_and_json_history_column(write):
    path = write(
        "d.csv",
        'instruction,input,output,history\n'
        'Say hi,,Hi!,"[[""u1"", ""a1""]]"\n'
        '"multi\nline",x,y,\n',
    )
    records = load_records(str(path))
    assert records[0]["history"] == [["u1", "a1"]]
    assert records[0]["input"] == ""
    assert records[1]["instruction"] == "multi\nline"
    assert origin(records[0]) == f"{path}:2"
    with pytest.raises(DeltatuneError, match="column 'history' is not valid JSON"):
        load_records(str(write("h.csv", "instruction,output,history\na,b,[oops\n")))


def test_missing_file_unknown_type_and_builtins(write):
    with pytest.raises(DeltatuneError, match="not found"):
        load_records("/nonexistent/x.jsonl")
    with pytest.raises(DeltatuneError, match="unsupported file type"):
        load_records(str(write("d.txt", "hi")))
    train = load_records("builtin:orgfacts/train")
    assert len(train) > 500 and origin(train[0]) == "builtin:orgfacts/train#0"
    with pytest.raises(DeltatuneError, match="unknown split"):
        load_records("builtin:orgfacts/nope")
    with pytest.raises(DeltatuneError, match="unknown built-in"):
        load_records("builtin:nope/train")
