"""Label names <-> ids for a classification run, and their file in the run dir.

    labels = LabelSet.from_records(train_records, "label")    # names found in data.train, sorted
    labels.id_of(record, "label", spec)                        # unseen label -> error naming file:line
    write_labels(run_dir, labels); read_labels(run_dir)        # RUN_DIR/labels.json

Ids follow sorted names (numeric order when every name is a number), so the same training data
gives the same ids on every run. A label is a string or a number in the data; it is kept as
its text ("3" for 3), which is also what inference prints.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from deltatune.atomic import write_text_atomic
from deltatune.data.sources import origin
from deltatune.errors import DeltatuneError

LABELS_FILE = "labels.json"


def label_text(record: dict, field: str, spec: str) -> str:
    """The record's label as text; a missing, empty or non-scalar label is an error naming file:line."""
    value = record.get(field)
    if value is None or (isinstance(value, str) and not value.strip()):
        keys = ", ".join(k for k in record if not k.startswith("_"))
        raise DeltatuneError(f"{origin(record)}: no label: the record has no non-empty '{field}' "
                             f"(its keys: {keys or 'none'}). Every row of {spec} needs one "
                             f"(or set classify.label_field to the key that holds it)")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DeltatuneError(f"{origin(record)}: '{field}' is {type(value).__name__} {value!r}; a label must be "
                             f"a string or a number")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _sort_key(name: str):
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


@dataclass(frozen=True)
class LabelSet:
    """The K label names of a run, in id order."""

    names: tuple[str, ...]

    @classmethod
    def from_records(cls, records: list[dict], field: str, spec: str) -> "LabelSet":
        names = sorted({label_text(r, field, spec) for r in records}, key=_sort_key)
        if len(names) < 2:
            raise DeltatuneError(f"{spec}: every row has the label {names[0]!r}; a classifier needs at least two "
                                 f"labels in data.train")
        return cls(tuple(names))

    def __len__(self) -> int:
        return len(self.names)

    def id_of(self, record: dict, field: str, spec: str) -> int:
        """The record's label id; a label not seen in data.train is an error naming file:line."""
        name = label_text(record, field, spec)
        try:
            return self.names.index(name)
        except ValueError:
            raise DeltatuneError(f"{origin(record)}: label {name!r} does not occur in data.train, so the classifier "
                                 f"cannot learn it; known labels: {', '.join(self.names)}. Fix the row or add "
                                 f"examples of it to the training data") from None


def write_labels(run_dir: Path, labels: LabelSet, **info) -> Path:
    """RUN_DIR/labels.json: {"labels": [names in id order], **info}, atomically."""
    path = Path(run_dir) / LABELS_FILE
    write_text_atomic(path, json.dumps({"labels": list(labels.names), **info}, indent=2) + "\n")
    return path


def read_labels(run_dir: Path) -> LabelSet:
    path = Path(run_dir) / LABELS_FILE
    if not path.is_file():
        raise DeltatuneError(f"{path} is missing: {run_dir} is not a finished `recipe: cls` run")
    return LabelSet(tuple(json.loads(path.read_text())["labels"]))
