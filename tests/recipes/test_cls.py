"""`recipe: cls`: sequence classification on a tiny random BERT (the real MiniLM tokenizer) and on
the tiny Llama, with every method of the catalogue; one slow test on the real MiniLM."""

from __future__ import annotations

import json
import re

import pytest
import torch
from cls_helpers import KEYWORDS, cls_config, keyword_files, keyword_records, make_tiny_bert, write_jsonl
from method_examples import EXAMPLES

from deltatune.classify.model import HEAD, class_logits
from deltatune.classify.predictor import Classifier, is_cls_run
from deltatune.errors import DeltatuneError
from deltatune.methods.registry import get_method
from deltatune.recipes import cls


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def keyword_data(tmp_path_factory):
    return keyword_files(tmp_path_factory.mktemp("keywords"))


@pytest.fixture
def spy(monkeypatch):
    """The model the recipe trains, and copies of its frozen / trainable tensors right after
    the method and head are on it (the head is attached after apply_method)."""
    seen = {}
    real_apply = cls.apply_method
    real_head = cls.attach_linear_head

    def apply(model, method_cfg, **kwargs):
        out = real_apply(model, method_cfg, **kwargs)
        seen["model"], seen["method_cfg"] = model, method_cfg
        seen["frozen"] = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
        seen["method_trainable"] = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        return out

    def head(model, name, out_features, seed=0):
        module = real_head(model, name, out_features, seed)
        seen["head"] = {k: v.detach().clone() for k, v in module.state_dict().items()}
        return module

    monkeypatch.setattr(cls, "apply_method", apply)
    monkeypatch.setattr(cls, "attach_linear_head", head)
    return seen


def _train_losses(run_dir) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r.get("event") == "train"]


def test_lora_on_tiny_bert_learns_saves_and_reloads(tiny_bert_dir, keyword_data, tmp_path, spy):
    cfg = cls_config(tiny_bert_dir, keyword_data, tmp_path / "run", train={"max_steps": 80})
    run_dir = cls.run(cfg)

    losses = _train_losses(run_dir)
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses
    model = spy["model"]
    # the base stays bit-identical; every LoRA tensor and the head moved
    for name, before in spy["frozen"].items():
        assert torch.equal(dict(model.named_parameters())[name], before), name
    params = dict(model.named_parameters())
    assert spy["method_trainable"] and all(not torch.equal(params[n], v) for n, v in spy["method_trainable"].items())
    assert all(not torch.equal(getattr(model, HEAD).state_dict()[k], v) for k, v in spy["head"].items())
    assert all("lora_" in n for n in spy["method_trainable"])

    labels = json.loads((run_dir / "labels.json").read_text())
    assert labels["labels"] == sorted(KEYWORDS) and labels["pooling"] == "mean"
    report = json.loads((run_dir / "eval.json").read_text())
    for when in ("before", "after"):
        for split in ("val", "test"):
            assert {"accuracy", "macro_f1", "majority_rate", "loss", "n", "per_label"} <= set(report[when][split])
    after, before = report["after"]["test"], report["before"]["test"]
    assert after["majority_rate"] == pytest.approx(sum(r["label"] == "animal" for r in keyword_records(30, 2)) / 30)
    assert after["accuracy"] >= 0.85 and after["accuracy"] > after["majority_rate"] + 0.3
    assert after["accuracy"] > before["accuracy"] and after["loss"] < before["loss"]
    assert report["labels"] == sorted(KEYWORDS) and report["parameters"]["trainable"] > 0

    # save -> reload: the same logits as the model that finished training
    texts = ["a small cat near the river", "the old bus was there", "plum", "very big banana garden today"]
    clf = Classifier.load(run_dir)
    enc = clf.tokenizer(texts, padding=True, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        trained = class_logits(model, getattr(model, HEAD), enc["input_ids"], enc["attention_mask"], "mean")
        loaded = class_logits(clf.model, clf.head, enc["input_ids"], enc["attention_mask"], clf.pooling)
    assert torch.equal(trained, loaded)
    preds = clf.predict(texts)
    assert [p.label for p in preds] == [sorted(KEYWORDS)[i] for i in trained.argmax(-1).tolist()]
    for p, row in zip(preds, torch.softmax(trained, -1)):
        assert p.score == pytest.approx(float(row.max()), abs=1e-6)
        assert sum(p.scores.values()) == pytest.approx(1.0, abs=1e-5) and list(p.scores) == sorted(KEYWORDS)
    # the reloaded classifier scores the test file as training's own evaluation did
    test_rows = keyword_records(30, seed=2)
    right = [p.label == r["label"] for p, r in zip(clf.predict([r["text"] for r in test_rows]), test_rows)]
    assert sum(right) / len(right) == pytest.approx(after["accuracy"])


def test_generate_prints_label_and_probability(tiny_bert_dir, keyword_data, tmp_path, capsys):
    from deltatune.cli import main

    run_dir = cls.run(cls_config(tiny_bert_dir, keyword_data, tmp_path / "run", eval={"before_after": False}))
    assert is_cls_run(run_dir)
    capsys.readouterr()
    assert main(["generate", str(run_dir), "the dog was seen by the house"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    label, prob = out[-1].split("\t")
    [pred] = Classifier.load(run_dir).predict(["the dog was seen by the house"])
    assert label == pred.label == "animal" and float(prob) == pytest.approx(pred.score, abs=1e-4)


@pytest.mark.parametrize("method", sorted(EXAMPLES))
def test_every_method_trains_a_bert_classifier(method, tiny_bert_dir, keyword_data, tmp_path, spy):
    """Each catalogue method on the encoder: its own tensors and the head move, frozen ones stay,
    and the saved run predicts exactly what the trained model does."""
    cfg = cls_config(tiny_bert_dir, keyword_data, tmp_path / "run", method=EXAMPLES[method],
                     train={"max_steps": 3, "lr": 1e-2}, eval={"before_after": False})
    run_dir = cls.run(cfg)
    model = spy["model"]
    params = dict(model.named_parameters())
    moved = [n for n, v in spy["method_trainable"].items() if n in params and not torch.equal(params[n], v)]
    assert moved, f"{method}: no method tensor moved"
    assert all(not torch.equal(getattr(model, HEAD).state_dict()[k], v) for k, v in spy["head"].items())
    # base weights may move only for methods that train them (delta_lora's after-step update);
    # qlora quantises the plain base as it installs, so its frozen tensors are new objects
    if not get_method(method).trains_base_weights and method != "qlora":
        for name, before in spy["frozen"].items():
            assert torch.equal(params[name], before), f"{method}: frozen {name} changed"
    texts = ["a goat and a truck", "banana"]
    clf = Classifier.load(run_dir)
    batch = clf.tokenizer(texts, padding=True, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        trained = class_logits(model, getattr(model, HEAD), batch["input_ids"], batch["attention_mask"], "mean")
        loaded = class_logits(clf.model, clf.head, batch["input_ids"], batch["attention_mask"], clf.pooling)
    torch.testing.assert_close(loaded, trained, rtol=0, atol=1e-5)


def test_default_llama_names_become_bert_names(tiny_bert_dir, keyword_data, tmp_path, spy):
    """IA3's and the adapters' defaults name Llama modules; on a BERT encoder they are translated,
    and the resolved names are what the run saves."""
    run_dir = cls.run(cls_config(tiny_bert_dir, keyword_data, tmp_path / "ia3", method={"name": "ia3"},
                                 train={"max_steps": 2}, eval={"before_after": False}))
    names = sorted(spy["method_trainable"])
    assert any(".attention.self.key." in n for n in names) and any(".attention.self.value." in n for n in names)
    assert any(n.startswith("encoder.layer.0.output.dense") for n in names)
    assert not any("attention.output.dense" in n for n in names)
    saved = (run_dir / "config.yaml").read_text()
    assert "k_proj" not in saved and "key" in saved
    cls.run(cls_config(tiny_bert_dir, keyword_data, tmp_path / "adapter", method={"name": "adapter"},
                       train={"max_steps": 2}, eval={"before_after": False}))
    assert any("attention.output.dense" in n for n in spy["method_trainable"])


def test_decoder_with_head_on_tiny_llama(tiny_llama_dir, keyword_data, tmp_path, spy):
    cfg = cls_config(tiny_llama_dir, keyword_data, tmp_path / "run", train={"max_steps": 80, "lr": 3e-3})
    run_dir = cls.run(cfg)
    losses = _train_losses(run_dir)
    assert sum(losses[-5:]) / 5 < 0.2 * sum(losses[:5]) / 5, losses
    assert json.loads((run_dir / "labels.json").read_text())["pooling"] == "last"
    model = spy["model"]
    params = dict(model.named_parameters())
    for name, before in spy["frozen"].items():
        assert torch.equal(params[name], before), name
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["after"]["val"]["accuracy"] >= 0.8
    assert report["after"]["test"]["accuracy"] > report["after"]["test"]["majority_rate"]
    clf = Classifier.load(run_dir)
    batch = clf.tokenizer(["the cat", "a red bus near the river"], padding=True, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        trained = class_logits(model, getattr(model, HEAD), batch["input_ids"], batch["attention_mask"], "last")
        loaded = class_logits(clf.model, clf.head, batch["input_ids"], batch["attention_mask"], clf.pooling)
    assert torch.equal(trained, loaded)


def test_resume_reproduces_the_uninterrupted_run(tiny_bert_dir, keyword_data, tmp_path):
    full = cls.run(cls_config(tiny_bert_dir, keyword_data, tmp_path / "full", train={"max_steps": 6, "save_every": 3},
                              eval={"before_after": False}))
    part = cls_config(tiny_bert_dir, keyword_data, tmp_path / "part", train={"max_steps": 3, "save_every": 3},
                      eval={"before_after": False})
    cls.run(part)
    resumed = cls.run(cls_config(tiny_bert_dir, keyword_data, tmp_path / "part", train={"max_steps": 6, "save_every": 3},
                                 eval={"before_after": False}), resume=True)
    assert _train_losses(resumed)[-3:] == pytest.approx(_train_losses(full)[-3:], rel=1e-5)


# -------------------------------------------------------------------------------------------
# Bad input: errors name file:line before anything is written


def _rows_with(tmp_path, name, bad_line: int, bad: dict) -> str:
    rows = keyword_records(12, seed=3)
    rows[bad_line - 1] = bad
    return write_jsonl(tmp_path / name, rows)


def test_missing_label_names_file_and_line(tiny_bert_dir, keyword_data, tmp_path):
    train = _rows_with(tmp_path, "train.jsonl", 5, {"text": "a cat"})
    cfg = cls_config(tiny_bert_dir, {**keyword_data, "train": train}, tmp_path / "run")
    with pytest.raises(DeltatuneError, match=r"train\.jsonl:5: no label.*'label'"):
        cls.run(cfg)
    assert not (tmp_path / "run").exists()


def test_missing_text_names_file_and_line(tiny_bert_dir, keyword_data, tmp_path):
    val = _rows_with(tmp_path, "val.jsonl", 7, {"label": "fruit", "txt": "pear"})
    cfg = cls_config(tiny_bert_dir, {**keyword_data, "val": val}, tmp_path / "run")
    with pytest.raises(DeltatuneError, match=r"val\.jsonl:7: no text"):
        cls.run(cfg)


@pytest.mark.parametrize("split", ["val", "test"])
def test_label_unseen_in_training_names_file_and_line(split, tiny_bert_dir, keyword_data, tmp_path):
    path = _rows_with(tmp_path, f"{split}.jsonl", 3, {"text": "a red rose", "label": "flower"})
    cfg = cls_config(tiny_bert_dir, {**keyword_data, split: path}, tmp_path / "run")
    with pytest.raises(DeltatuneError, match=rf"{split}\.jsonl:3: label 'flower' does not occur in data\.train.*"
                                             r"known labels: animal, fruit, vehicle"):
        cls.run(cfg)
    assert not (tmp_path / "run").exists()


def test_other_field_names_and_numeric_labels(tiny_bert_dir, tmp_path):
    rows = [{"body": r["text"], "y": sorted(KEYWORDS).index(r["label"])} for r in keyword_records(40, seed=4)]
    files = {"train": write_jsonl(tmp_path / "t.jsonl", rows)}
    cfg = cls_config(tiny_bert_dir, files, tmp_path / "run", train={"max_steps": 2}, eval={"before_after": False},
                     classify={"text_field": "body", "label_field": "y", "head_lr_ratio": 5.0})
    run_dir = cls.run(cfg)
    assert json.loads((run_dir / "labels.json").read_text())["labels"] == ["0", "1", "2"]
    assert (run_dir / "val_heldout.jsonl").is_file()  # data.val unset: carved from data.train


def test_generation_measures_are_refused(tiny_bert_dir, keyword_data, tmp_path):
    cfg = cls_config(tiny_bert_dir, keyword_data, tmp_path / "run", data={"probe": "builtin:general/probe"})
    with pytest.raises(DeltatuneError, match="data.probe"):
        cls.run(cfg)


def test_metrics_by_hand():
    from deltatune.classify.metrics import classification_metrics

    # gold: a a a b c ; predicted: a a b b a
    m = classification_metrics([0, 0, 0, 1, 2], [0, 0, 1, 1, 0], ["a", "b", "c"], majority=0)
    assert m["accuracy"] == pytest.approx(3 / 5)
    # a: P 2/3 R 2/3 F1 2/3; b: P 1/2 R 1 F1 2/3; c: P 0 R 0 F1 0  -> macro 4/9
    assert m["macro_f1"] == pytest.approx(4 / 9)
    assert m["majority_rate"] == pytest.approx(3 / 5) and m["majority_label"] == "a"
    assert m["confusion"] == [[2, 1, 0], [0, 1, 0], [1, 0, 0]]


# -------------------------------------------------------------------------------------------
# The real MiniLM


@pytest.mark.slow
def test_minilm_lora_on_builtin_intents(tmp_path):
    """The embedded all-MiniLM-L6-v2 + LoRA learns the built-in intents: test accuracy (held-out
    phrasings and slot values) far above the majority-class rate (16%). Measured (seed 0, one
    thread, ~13 s in all): 4 steps of 16 rows reach 48% test accuracy, 8 steps 82%, 12 steps 94%."""
    from deltatune.config import validate_config

    cfg = validate_config({
        "recipe": "cls", "model": {"name": "minilm-l6"},
        "method": {"name": "lora", "r": 8, "alpha": 16, "targets": "all-linear"},
        "data": {"train": "builtin:intents/train", "val": "builtin:intents/val", "test": "builtin:intents/test",
                 "max_length": 48},
        "classify": {"head_lr_ratio": 5.0},
        "train": {"batch_size": 16, "lr": 2e-3, "max_steps": 12, "schedule": "constant", "num_threads": 1,
                  "eval_every": 100},
        "eval": {"before_after": False},
        "output": {"dir": str(tmp_path / "run")},
    })
    run_dir = cls.run(cfg)
    test = json.loads((run_dir / "eval.json").read_text())["after"]["test"]
    assert test["n"] == 192 and test["majority_rate"] < 0.2
    assert test["accuracy"] >= 0.85 and test["macro_f1"] >= 0.8, test


def test_parallel_ffn_adapter_is_refused_on_bert(tiny_bert_dir, keyword_data, tmp_path):
    cfg = cls_config(tiny_bert_dir, keyword_data, tmp_path / "run", method={"name": "adapter", "placement": "parallel"})
    with pytest.raises(DeltatuneError, match=r"parallel_at: \[ffn\].*BERT-style encoder.*houlsby or pfeiffer"):
        cls.run(cfg)
    assert not (tmp_path / "run").exists()


def test_fisher_mask_is_estimated_with_the_classification_loss(tiny_bert_dir, keyword_data, tmp_path):
    run_dir = cls.run(cls_config(tiny_bert_dir, keyword_data, tmp_path / "run", train={"max_steps": 2},
                                 method={"name": "fishmask", "keep_ratio": 0.05, "mask": "fisher", "num_samples": 16},
                                 eval={"before_after": False}))
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    [prepare] = [r for r in rows if r.get("event") == "prepare"]
    assert prepare["mask"] == "fisher" and prepare["examples"] == 16 and prepare["keep"] > 0


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_head_lr_ratio_gives_the_head_its_own_group(method, tiny_bert_dir):
    from deltatune.config import ModelConfig
    from deltatune.methods.core import apply_method
    from deltatune.methods.registry import METHODS
    from deltatune.models.heads import WithHeads, attach_linear_head
    from deltatune.models.loader import load_encoder
    from deltatune.training.optim import build_optimizer

    model, _ = load_encoder(ModelConfig(name=str(tiny_bert_dir)))
    extra = {"feedforward": []} if method == "ia3" else {}
    installed = apply_method(model, METHODS[method].config_cls(targets=["query", "value"], **extra))
    head = attach_linear_head(model, HEAD, 3)
    train_cfg = cls_config(tiny_bert_dir, {"train": "x.jsonl"}, "run", train={"lr": 1e-3}).train
    optimizer = build_optimizer(model, train_cfg, WithHeads(installed, {HEAD: head}, 5.0).hooks.param_groups(train_cfg))
    lrs = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert [lrs[id(p)] for p in head.parameters()] == pytest.approx([5e-3, 5e-3])
    assert all(lrs[id(p)] == pytest.approx(1e-3) for p in installed.trainable())
    assert set(lrs) == {id(p) for p in [*installed.trainable(), *head.parameters()]}


def test_eval_cli_scores_a_classifier_run(tiny_bert_dir, keyword_data, tmp_path, capsys):
    from deltatune.cli import main

    run_dir = cls.run(cls_config(tiny_bert_dir, keyword_data, tmp_path / "run", eval={"before_after": False}))
    trained = json.loads((run_dir / "eval.json").read_text())["after"]["test"]
    capsys.readouterr()
    assert main(["eval", str(run_dir)]) == 0
    assert "accuracy" in capsys.readouterr().out
    [report] = list((run_dir / "evals").glob("eval-*.json"))
    measured = json.loads(report.read_text())["after"]["test"]
    assert measured["accuracy"] == pytest.approx(trained["accuracy"])
    assert measured["majority_rate"] == pytest.approx(trained["majority_rate"])
    bad = write_jsonl(tmp_path / "other.jsonl", [{"text": "a rose", "label": "flower"}])
    assert main(["eval", str(run_dir), "--data", bad]) == 2
    assert re.search(r"other\.jsonl:1: label 'flower' does not occur", capsys.readouterr().err)


def test_a_cls_run_neither_chats_nor_serves_as_a_base(tiny_bert_dir, keyword_data, tmp_path, capsys):
    from deltatune.cli import main

    run_dir = cls.run(cls_config(tiny_bert_dir, keyword_data, tmp_path / "run", train={"max_steps": 2},
                                 eval={"before_after": False}))
    capsys.readouterr()
    assert main(["chat", str(run_dir)]) == 2
    assert "is a classifier" in capsys.readouterr().err
    with pytest.raises(DeltatuneError, match="is a classifier run.*its base"):
        cls.run(cls_config(run_dir, keyword_data, tmp_path / "again"))
