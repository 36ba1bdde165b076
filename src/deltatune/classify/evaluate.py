"""`deltatune eval CLS_RUN [--data FILE]`: score a finished classifier on its test split or a file.

    run_cls_eval("runs/cls", data="my_test.jsonl")   # prints accuracy, macro-F1, majority rate;
                                                     # writes RUN/evals/eval-<UTC time>[-<stem>].json

Rows are read as in training (`classify.text_field` / `classify.label_field`; a missing label
or one the run never trained on is an error naming file:line). The majority-class rate is that
of the run's own training majority label (labels.json). `RUN/eval.json` (training's record)
is left alone.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from deltatune.classify.data import record_text
from deltatune.classify.metrics import classification_metrics, summary_line
from deltatune.errors import DeltatuneError


def _report_path(run_dir: Path, data: str | None) -> Path:
    stem = "eval-" + time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    if data:
        name = data.removeprefix("builtin:").replace("/", "-") if data.startswith("builtin:") else Path(data).stem
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")
        stem = f"{stem}-{name}" if name else stem
    folder = run_dir / "evals"
    folder.mkdir(parents=True, exist_ok=True)
    path, n = folder / f"{stem}.json", 1
    while path.exists():
        n += 1
        path = folder / f"{stem}-{n}.json"
    return path


def run_cls_eval(target, data: str | None = None, out: str | None = None, force: bool = False,
                 max_examples: int | None = None) -> dict:
    """Measure the classifier run `target` on `data` (default: its data.test, else data.val)."""
    from deltatune.classify.predictor import Classifier
    from deltatune.config import load_run_config
    from deltatune.data import load_records
    from deltatune.eval.report import write_eval_json

    run_dir = Path(target)
    if out is not None and Path(out).exists() and not force:
        raise DeltatuneError(f"{out} already exists; pass --force to replace it, or choose another --out")
    cfg = load_run_config(run_dir)
    spec = data or cfg.data.test or cfg.data.val
    if spec is None:
        raise DeltatuneError(f"{run_dir}: its config names no data.test / data.val; pass --data FILE")
    records = load_records(spec)[:max_examples]
    clf = Classifier.load(run_dir)
    texts = [record_text(r, cfg.classify.text_field, spec) for r in records]
    gold = [clf.labels.id_of(r, cfg.classify.label_field, spec) for r in records]
    preds = clf.predict(texts)
    labels_file = json.loads((run_dir / "labels.json").read_text())
    majority = clf.names.index(labels_file.get("majority_label", clf.names[0]))
    metrics = classification_metrics(gold, [clf.names.index(p.label) for p in preds], clf.names, majority)
    print(summary_line(spec, metrics), flush=True)
    split = "data" if data else ("test" if cfg.data.test else "val")
    payload = {"target": str(run_dir), "data": spec, "after": {split: metrics}}
    path = Path(out) if out is not None else _report_path(run_dir, data)
    write_eval_json(path, payload)
    print(f"wrote {path}")
    return payload
