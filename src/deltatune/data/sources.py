"""Read training records from a file or a built-in generated dataset.

    records = load_records("data/my_train.jsonl")        # .json (list), .jsonl or .csv
    records = load_records("builtin:orgfacts/train")     # any spec in deltatune.datasets.BUILTINS

Every record is a plain dict; each carries a private `_origin` key ("file.jsonl:12",
"file.json[3]", "builtin:orgfacts/train#7") so later stages (format detection, tokenisation)
can name the exact place of a bad record. Errors are `DeltatuneError`s naming file:line and
the reason; nothing is written anywhere.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from deltatune.errors import DeltatuneError

ORIGIN = "_origin"  # private key: where a record came from, for error messages
BUILTIN_PREFIX = "builtin:"  # the specs themselves are listed in deltatune.datasets.BUILTINS


def origin(record: dict) -> str:
    """Where a record came from ("file.jsonl:12"), or "<record>" when unknown."""
    return str(record.get(ORIGIN, "<record>"))


def public_fields(record: dict) -> dict:
    """The record without private bookkeeping keys (for writing back out)."""
    return {k: v for k, v in record.items() if not k.startswith("_")}


def load_records(spec: str) -> list[dict]:
    """Records from `builtin:NAME/SPLIT` or a .json / .jsonl / .csv file; never empty."""
    if spec.startswith(BUILTIN_PREFIX):
        records = _load_builtin(spec)
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise DeltatuneError(f"data file not found: {spec}")
        suffix = path.suffix.lower()
        readers = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv}
        if suffix not in readers:
            raise DeltatuneError(
                f"{spec}: unsupported file type {suffix or '(none)'!r}; use .jsonl, .json or .csv "
                f"(or builtin:orgfacts/train)"
            )
        try:
            records = readers[suffix](path, spec)
        except UnicodeDecodeError as err:
            raise DeltatuneError(f"{spec}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if not records:
        raise DeltatuneError(f"{spec}: the dataset is empty (no records); nothing to train on")
    return records


def _read_jsonl(path: Path, name: str) -> list[dict]:
    records = []
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue  # blank lines (often a trailing newline) are not records
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DeltatuneError(
                    f"{name}:{lineno}: malformed JSON line: {err.msg} (column {err.colno}). "
                    f"Each line must be one JSON object."
                ) from None
            records.append(_as_record(row, f"{name}:{lineno}"))
    return records


def _read_json(path: Path, name: str) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DeltatuneError(f"{name}:{err.lineno}: malformed JSON: {err.msg} (column {err.colno})") from None
    if not isinstance(data, list):
        raise DeltatuneError(
            f"{name}: a .json data file must hold a list of objects, got a {type(data).__name__} "
            f"(for one object per line use .jsonl)"
        )
    return [_as_record(row, f"{name}[{i}]") for i, row in enumerate(data)]


def _read_csv(path: Path, name: str) -> list[dict]:
    records = []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames:
            return []
        for row in reader:
            where = f"{name}:{reader.line_num}"
            if None in row:  # more cells than header columns
                raise DeltatuneError(f"{where}: row has more cells than the header ({len(reader.fieldnames)} columns)")
            record = {k: v for k, v in row.items() if v is not None}
            # a `history` / `messages` / `conversations` cell holds JSON text; decode it here
            for key in ("history", "messages", "conversations"):
                if isinstance(record.get(key), str) and record[key].strip():
                    try:
                        record[key] = json.loads(record[key])
                    except json.JSONDecodeError as err:
                        raise DeltatuneError(f"{where}: column '{key}' is not valid JSON: {err.msg}") from None
            records.append(_as_record(record, where))
    return records


def _as_record(row: object, where: str) -> dict:
    if not isinstance(row, dict):
        raise DeltatuneError(f"{where}: each record must be a JSON object, got {type(row).__name__}")
    record = dict(row)
    record[ORIGIN] = where
    return record


def _load_builtin(spec: str) -> list[dict]:
    """A generated dataset from the one table of built-ins, `deltatune.datasets.BUILTINS`."""
    # imported here: the generated datasets are not part of the pipeline, only looked up by it
    from deltatune.datasets import BUILTINS, dataset_names, dataset_splits

    if spec not in BUILTINS:
        name, _, split = spec[len(BUILTIN_PREFIX) :].partition("/")
        if dataset_splits(name):
            what, known = f"unknown split {split!r} of {name!r}", ", ".join(dataset_splits(name))
        else:
            what, known = f"unknown built-in dataset {name!r}", ", ".join(dataset_names())
        raise DeltatuneError(f"{spec}: {what}; known: {known} (see `deltatune data make --help`)")
    return [dict(r, **{ORIGIN: f"{spec}#{i}"}) for i, r in enumerate(BUILTINS[spec]())]
