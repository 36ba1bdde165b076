"""End-to-end `sft` recipe on the tiny Llama: learning, frozen weights, resume, accumulation,
NaN guard, bad data, early stopping. Every test here can fail if the loop is wrong."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from deltatune.errors import DeltatuneError
from deltatune.recipes import sft
from deltatune.training.checkpoint import latest_checkpoint, list_checkpoints
from deltatune.training.metrics import read_metrics


def _losses(run_dir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl", "train")}


@pytest.mark.parametrize("method", [
    {"name": "lora", "r": 8, "alpha": 64, "targets": "all-linear"},
    {"name": "freeze", "train_last_n_blocks": 1, "train_norm": True},
    {"name": "full"},
])
def test_loss_falls_and_frozen_weights_untouched(make_cfg, capture_model, method):
    lr = 3e-3 if method["name"] == "full" else 2e-2
    cfg = make_cfg(method=method, train={"max_steps": 40, "lr": lr})
    run_dir = sft.run(cfg)
    losses = list(_losses(run_dir).values())
    assert len(losses) == 40
    # batch-to-batch noise here is ~0.1 nats; a loop that does not learn stays flat (the tiny
    # random model's LoRA floor is ~10.3 from ~10.9: its logit scale is set by frozen weights)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.4, losses

    model = capture_model["model"]
    params = dict(model.named_parameters())
    assert capture_model["trainable"], "the method trains something"
    for name, before in capture_model["frozen"].items():
        assert torch.equal(params[name], before), f"frozen parameter {name} changed"
    changed = [n for n, before in capture_model["trainable"].items() if not torch.equal(params[n], before)]
    assert changed, "no trainable parameter moved"
    assert (run_dir / "adapter").is_dir() and (run_dir / "eval.json").is_file()
    assert (run_dir / "config.yaml").is_file() and (run_dir / "loss.png").is_file()


def test_resume_reproduces_uninterrupted_run(make_cfg, tmp_path):
    # dropout on, so the dropout RNG must be restored too; 24 examples / batch 4 = 6 batches per
    # epoch, grad_accum 2 -> after step 4 the data position is epoch 1, batch 2 (mid-epoch)
    method = {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.3, "targets": "all-linear"}
    train = {"max_steps": 8, "grad_accum": 2, "save_every": 4, "keep_checkpoints": 5,
             "schedule": "cosine", "warmup_steps": 2, "eval_every": 2}
    full_dir = sft.run(make_cfg(run="full", method=method, train=train))
    reference = _losses(full_dir)
    assert sorted(reference) == list(range(1, 9))

    # simulate an interruption after the step-4 checkpoint: copy the run, drop everything later
    cut = tmp_path / "cut"
    shutil.copytree(full_dir, cut)
    for ckpt in list_checkpoints(cut):
        if ckpt.name != "step-4":
            shutil.rmtree(ckpt)
    shutil.rmtree(cut / "adapter")
    (cut / "eval.json").unlink()
    assert latest_checkpoint(cut).name == "step-4"
    position = json.loads((latest_checkpoint(cut) / "state.json").read_text())
    assert (position["epoch"], position["batch_index"]) == (1, 2)

    resumed_dir = sft.run(make_cfg(run="cut", method=method, train=train), resume=True)
    resumed = _losses(resumed_dir)
    assert sorted(resumed) == list(range(1, 9))
    for step in range(5, 9):
        assert resumed[step] == pytest.approx(reference[step], abs=1e-6), (step, resumed, reference)
    a = load_file(str(full_dir / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(resumed_dir / "adapter" / "adapter_model.safetensors"))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_grad_accum_2x4_equals_batch_8(make_cfg, alpaca_file, tiny_llama_dir):
    # 8 examples: one step sees all of them either way; full FT so every weight gets a gradient
    data = {"train": alpaca_file("eight.jsonl", 8, seed=3), "val": None}
    weights = {}
    for name, bs, ga in [("b8", 8, 1), ("b4x2", 4, 2)]:
        cfg = make_cfg(run=name, method={"name": "full"}, data=data,
                       train={"batch_size": bs, "grad_accum": ga, "max_steps": 1, "lr": 1e-3})
        run_dir = sft.run(cfg)
        weights[name] = load_file(str(run_dir / "adapter" / "model.safetensors"))
    base = load_file(str(tiny_llama_dir / "model.safetensors"))
    moved = 0
    for key, w8 in weights["b8"].items():
        assert torch.allclose(w8, weights["b4x2"][key], atol=1e-5), key
        moved += int(key in base and not torch.equal(w8, base[key]))
    assert moved > 0


def test_accumulate_gradients_matches_single_batch(tiny_llama_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from deltatune.config import TrainConfig
    from deltatune.data.batching import collate
    from deltatune.losses.lm import model_lm_loss
    from deltatune.methods.core import apply_method
    from deltatune.methods.full import FullConfig
    from deltatune.training.step import OptimiserStep

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).train()
    installed = apply_method(model, FullConfig())
    accumulate_gradients = OptimiserStep(model, installed, TrainConfig(), 1, model_lm_loss).accumulate
    g = torch.Generator().manual_seed(0)
    examples = []
    for i in range(8):
        ids = torch.randint(0, 1000, (5 + 3 * i,), generator=g).tolist()
        labels = [-100] * (2 + i % 3) + ids[2 + i % 3:]  # different label counts per example
        examples.append({"input_ids": ids, "labels": labels})
    loss8, n8 = accumulate_gradients([collate(examples, tok.pad_token_id)])
    g8 = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    loss4, n4 = accumulate_gradients([collate(examples[:4], tok.pad_token_id), collate(examples[4:], tok.pad_token_id)])
    assert n4 == n8 and loss4 == pytest.approx(loss8, abs=1e-5)
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, g8[n], atol=1e-6), n


def test_nan_guard_stops_and_keeps_good_checkpoint(make_cfg):
    cfg = make_cfg(method={"name": "full"}, train={"lr": 1e30, "max_steps": 6, "save_every": 1, "max_grad_norm": None})
    with pytest.raises(DeltatuneError, match=r"at optimiser step \d+.*Lower train.lr") as err:
        sft.run(cfg)
    run_dir = cfg.output.dir
    ckpt = latest_checkpoint(run_dir)
    assert ckpt is not None, str(err.value)
    assert str(ckpt) in str(err.value)
    failed_step = read_metrics(f"{run_dir}/metrics.jsonl", "nan_stop")[-1]["step"]
    assert int(ckpt.name.split("-")[1]) == failed_step - 1
    for name, t in load_file(str(ckpt / "trainable.safetensors")).items():
        assert torch.isfinite(t).all(), name
    assert not (ckpt.parent.parent / "adapter").exists()


def test_bad_data_writes_nothing(make_cfg, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "hi", "output": "there"}\n{"instruction": oops}\n')
    cfg = make_cfg(run="badrun", data={"train": str(bad)})
    with pytest.raises(DeltatuneError, match="bad.jsonl:2"):
        sft.run(cfg)
    assert not (tmp_path / "badrun").exists()


def test_early_stopping(make_cfg):
    # lr so small that fp32 weights cannot move: the val loss repeats exactly, never improves
    cfg = make_cfg(method={"name": "full"}, train={"lr": 1e-30, "max_steps": 20, "eval_every": 1,
                                                   "early_stopping_patience": 2})
    run_dir = sft.run(cfg)
    stops = read_metrics(run_dir / "metrics.jsonl", "early_stop")
    assert len(stops) == 1 and stops[0]["step"] == 3
    assert sorted(_losses(run_dir)) == [1, 2, 3]


def test_the_best_weights_are_restored_when_val_loss_turns_up(make_cfg, tmp_path):
    """Val answers are a word train never uses: val loss first falls (the answer format and its
    end-of-turn token are learnt), then rises (train's own answers take the probability mass).
    The saved adapter must be the lowest-val-loss weights, while the last checkpoint keeps the
    last ones for --resume."""
    from deltatune.training.checkpoint import best_weights

    names, colours = ["Ada", "Bo", "Cy", "Dee", "Eli", "Fay"], ["red", "blue", "green", "amber", "violet", "teal"]
    def doors(answer):
        return [{"instruction": f"What colour is {n}'s door?", "input": "", "output": answer(i)} for i, n in enumerate(names)]
    files = {split: tmp_path / f"{split}.jsonl" for split in ("train", "val")}
    files["train"].write_text("".join(json.dumps(r) + "\n" for r in doors(lambda i: colours[i]) * 4))
    files["val"].write_text("".join(json.dumps(r) + "\n" for r in doors(lambda i: "purple")))
    cfg = make_cfg(method={"name": "full"}, data={"train": str(files["train"]), "val": str(files["val"])},
                   train={"max_steps": 60, "lr": 5e-3, "eval_every": 5, "save_every": 60})
    run_dir = sft.run(cfg)
    vals = {r["step"]: r["val_loss"] for r in read_metrics(run_dir / "metrics.jsonl", "val")}
    best_step = min(vals, key=vals.get)
    assert best_step < 60 and vals[60] > vals[best_step] + 0.5, vals  # the scenario: it did turn up
    [restore] = read_metrics(run_dir / "metrics.jsonl", "restore_best")
    assert restore["best_step"] == best_step
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["restored_best_step"] == best_step
    usage = report["resources"]  # what the run cost, from the optimiser steps of this process
    [end] = read_metrics(run_dir / "metrics.jsonl", "end")
    assert end["peak_rss_mib"] == usage["peak_rss_mib"] > 50
    if usage["train_peak_rss_mib"] is not None:  # Linux: the training phase's own high-water mark
        assert 0 < usage["train_peak_rss_mib"] <= usage["peak_rss_mib"] + 1
    assert usage["train_tokens"] > 0 and usage["train_seconds"] > 0
    assert report["parameters"]["trainable"] == report["parameters"]["total"]  # method full
    assert usage["tokens_per_s"] == pytest.approx(usage["train_tokens"] / usage["train_seconds"], rel=0.02)
    # the adapter on disk reproduces the best val loss, not the last one
    assert report["after"]["val"]["loss"] == pytest.approx(vals[best_step], rel=1e-4)
    assert best_weights(run_dir)[1]["step"] == best_step
    last = load_file(str(latest_checkpoint(run_dir) / "trainable.safetensors"))  # --resume goes on from here
    best = load_file(str(best_weights(run_dir)[0] / "trainable.safetensors"))
    assert last.keys() == best.keys() and not all(torch.equal(last[k], best[k]) for k in last)

    no_restore = sft.run(make_cfg(run="last", method=cfg.method.model_dump(), data=cfg.data.model_dump(),
                                  train={"max_steps": 60, "lr": 5e-3, "eval_every": 5, "restore_best": False}))
    assert not read_metrics(no_restore / "metrics.jsonl", "restore_best")


def test_refuses_to_overwrite_finished_run(make_cfg):
    cfg = make_cfg(train={"max_steps": 1})
    sft.run(cfg)
    with pytest.raises(DeltatuneError, match="--resume"):
        sft.run(cfg)


def test_before_after_eval_report(make_cfg, alpaca_file, capsys):
    test_file = alpaca_file("test.jsonl", 3, seed=5)
    cfg = make_cfg(run="ba", data={"test": test_file}, train={"max_steps": 2},
                   eval={"before_after": True, "max_new_tokens": 3, "max_examples": 3})
    run_dir = sft.run(cfg)
    report = json.loads((run_dir / "eval.json").read_text())
    assert set(report["before"]) == set(report["after"]) == {"test", "val"}
    assert report["after"]["val"]["loss"] > 0 and report["steps"] == 2
    out = capsys.readouterr().out
    assert "test/contains" in out and "val/loss" in out and "run dir:" in out


def test_replay_examples_join_the_training_set(make_cfg, monkeypatch):
    """data.replay: the base model's answers (here stubbed: the real generator has a slow test
    of its own) become masked SFT examples next to the user's data, before the method exists."""
    from deltatune.data import build_sft_dataset, load_records
    from deltatune.models.loader import load_causal_lm
    from deltatune.recipes import sft

    seen = {}

    def fake_replay(model, tokenizer, spec, system_prompt, max_new_tokens, batch_size):
        seen["base_has_no_method"] = not any(p.requires_grad is False for p in model.parameters())
        return [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
                for i in range(5)]

    monkeypatch.setattr(sft, "self_replay_records", fake_replay)
    cfg = make_cfg(data={"replay": "builtin:general/prompts"})
    model, tokenizer = load_causal_lm(cfg.model)
    train_set = sft.load_datasets(cfg, tokenizer, model).train
    plain = build_sft_dataset(load_records(cfg.data.train), tokenizer, cfg.data)
    assert len(train_set) == len(plain) + 5 and train_set.stats["replay"] == 5
    assert seen["base_has_no_method"]
    replayed = train_set.examples[-1]
    trained = tokenizer.decode([t for t, l in zip(replayed["input_ids"], replayed["labels"]) if l != -100])
    assert trained.startswith("a4")  # only the answer is trained, the prompt is masked


def test_replay_distillation_and_weight_train_end_to_end(make_cfg, monkeypatch):
    """data.replay_topk + data.replay_weight: replay examples carry the base model's top-k
    targets and their weight into training; the user's own examples carry neither."""
    monkeypatch.setattr(sft, "self_replay_records", lambda *a, **k: [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"answer {i} here"}]}
        for i in range(4)])
    cfg = make_cfg(data={"replay": "builtin:general/prompts", "replay_topk": 4, "replay_weight": 3.0},
                   train={"max_steps": 20, "lr": 2e-2})
    from deltatune.models.loader import load_causal_lm

    model, tokenizer = load_causal_lm(cfg.model)
    train_set = sft.load_datasets(cfg, tokenizer, model).train
    replayed, own = train_set.examples[-4:], train_set.examples[:-4]
    assert all(ex["loss_weight"] == 3.0 and any(t is not None for t in ex["teacher_ids"]) for ex in replayed)
    assert all(len([t for t in ex["teacher_ids"] if t]) == sum(1 for l in ex["labels"] if l != -100) for ex in replayed)
    assert not any("teacher_ids" in ex or "loss_weight" in ex for ex in own)
    run_dir = sft.run(cfg)
    losses = list(_losses(run_dir).values())
    assert all(torch.isfinite(torch.tensor(losses))) and min(losses[-5:]) < losses[0]


def test_replay_settings_without_replay_are_noted_and_harmless(make_cfg, capsys):
    """The default YAML keeps replay_topk / replay_weight; turning data.replay off must still train."""
    run_dir = sft.run(make_cfg(data={"replay_topk": 4, "replay_weight": 5.0}, train={"max_steps": 2}))
    assert "data.replay is off" in capsys.readouterr().out
    assert (run_dir / "adapter").is_dir()
