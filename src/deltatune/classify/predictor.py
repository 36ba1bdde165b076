"""A finished `recipe: cls` run as a classifier: text in, label and probabilities out.

    clf = Classifier.load("runs/cls")                 # base + adapter + head + labels.json
    [p] = clf.predict(["where is my parcel?"])        # Prediction(label="delivery_status", score=0.97,
                                                      #            scores={"refund": 0.01, ...}, tokens=9)
    is_cls_run("runs/cls")                            # a run dir whose config says recipe: cls

`deltatune generate RUN_DIR "text"` and the server's `POST /v1/classify` both use it. Texts are
cut to the run's `data.max_length` tokens as in training; the run's own pooling is used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from deltatune.classify.data import collate_labels, encode_texts
from deltatune.classify.labels import LABELS_FILE, read_labels
from deltatune.classify.model import HEAD, HEAD_FILE, class_logits, load_backbone_for_inference, resolve_pooling
from deltatune.errors import DeltatuneError


def is_cls_run(target) -> bool:
    """Is `target` a run dir of `recipe: cls` (config.yaml says so, or labels.json is there)?"""
    path = Path(str(target))
    if not (path / "config.yaml").is_file():
        return False
    if (path / LABELS_FILE).is_file():
        return True
    import yaml

    try:
        return (yaml.safe_load((path / "config.yaml").read_text()) or {}).get("recipe") == "cls"
    except yaml.YAMLError:
        return False


@dataclass
class Prediction:
    label: str  # the most probable label
    score: float  # its probability
    scores: dict[str, float] = field(default_factory=dict)  # every label's probability, in label order
    tokens: int = 0  # tokens the text took (after truncation)


class Classifier:
    """A cls run's model, head, labels and settings, ready to predict (eval mode, no grad)."""

    def __init__(self, model, tokenizer, head, labels, pooling: str, max_length: int, run_dir: Path):
        self.model, self.tokenizer, self.head = model, tokenizer, head
        self.labels, self.pooling, self.max_length, self.run_dir = labels, pooling, max_length, Path(run_dir)

    @classmethod
    def load(cls, run_dir, device: str = "cpu") -> "Classifier":
        from deltatune.config import load_run_config
        from deltatune.methods.core import load_adapter
        from deltatune.models.heads import load_head

        run_dir = Path(run_dir)
        cfg = load_run_config(run_dir)
        if cfg.recipe != "cls":
            raise DeltatuneError(f"{run_dir} is a `recipe: {cfg.recipe}` run, not a classifier (recipe: cls)")
        labels = read_labels(run_dir)
        if not (run_dir / "adapter").is_dir() or not (run_dir / HEAD_FILE).is_file():
            raise DeltatuneError(f"{run_dir} has no adapter/ or {HEAD_FILE}: the run did not finish; "
                                 f"train it to the end (deltatune train CONFIG --resume)")
        model, tokenizer, encoder = load_backbone_for_inference(cfg, device)
        load_adapter(model, run_dir / "adapter", tokenizer=tokenizer)
        model.requires_grad_(False)
        head = load_head(model, run_dir / HEAD_FILE, HEAD)
        if head.out_features != len(labels):
            raise DeltatuneError(f"{run_dir}: the head has {head.out_features} outputs but labels.json lists "
                                 f"{len(labels)} labels")
        about = run_dir / HEAD_FILE.replace(".safetensors", ".json")
        saved = json.loads(about.read_text()).get("pooling") if about.is_file() else None
        pooling = saved or resolve_pooling(cfg.classify.pooling, encoder)
        model.eval()
        return cls(model, tokenizer, head, labels, pooling, cfg.data.max_length, run_dir)

    @property
    def names(self) -> list[str]:
        return list(self.labels.names)

    @torch.no_grad()
    def predict(self, texts: list[str], batch_size: int = 32) -> list[Prediction]:
        """One Prediction per text, in order."""
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise DeltatuneError(f"text {i} is empty: nothing to classify")
        ids, _ = encode_texts(self.tokenizer, texts, self.max_length)
        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id
        out: list[Prediction] = []
        for start in range(0, len(ids), batch_size):
            rows = ids[start:start + batch_size]
            batch = collate_labels([{"input_ids": r} for r in rows], pad)
            logits = class_logits(self.model, self.head, batch["input_ids"].to(device),
                                  batch["attention_mask"].to(device), self.pooling)
            probs = F.softmax(logits.float(), dim=-1).cpu()
            for row, p in zip(rows, probs):
                best = int(p.argmax())
                out.append(Prediction(self.names[best], float(p[best]),
                                      {name: float(v) for name, v in zip(self.names, p)}, len(row)))
        return out
