"""`recipe: rm` and `recipe: dpo` end to end on the tiny Llama: the loss falls, held-out accuracy
is reported, the reference is never touched, resume reproduces the run, accumulation equals a
bigger batch, a finished run scores text."""

from __future__ import annotations

import json

import pytest
import torch

from deltatune.recipes import dpo, rm


def _eval(run_dir):
    return json.loads((run_dir / "eval.json").read_text())


def _train_losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r.get("event") == "train"]


def test_rm_learns_the_pairs_and_saves_its_head(pref_cfg):
    cfg = pref_cfg("rm", train={"max_steps": 12}, eval={"before_after": True}, preference={"head_init": "random"})
    run_dir = rm.run(cfg)
    result = _eval(run_dir)
    losses = _train_losses(run_dir)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    assert result["after"]["val"]["pairwise_accuracy"] > result["before"]["val"]["pairwise_accuracy"]
    assert result["after"]["val"]["pairwise_accuracy"] >= 0.75
    assert (run_dir / "reward_head.safetensors").is_file()
    assert json.loads((run_dir / "reward_head.json").read_text())["kind"] == "reward"


@pytest.mark.parametrize("loss", ["sigmoid", "ipo", "hinge", "simpo", "orpo"])
def test_dpo_losses_raise_held_out_reward_accuracy(pref_cfg, loss):
    beta = 2.0 if loss == "simpo" else 0.1
    cfg = pref_cfg("dpo", train={"max_steps": 10}, eval={"before_after": True},
                   preference={"loss": loss, "beta": beta})
    run_dir = dpo.run(cfg)
    result = _eval(run_dir)
    assert result["after"]["val"]["reward_accuracy"] >= 0.75, result["after"]["val"]
    if loss in ("sigmoid", "ipo", "hinge"):  # policy == reference before training: every pair ties
        assert result["before"]["val"]["reward_accuracy"] == 0.5


def test_rm_resume_reproduces_the_uninterrupted_run(pref_cfg):
    whole = rm.run(pref_cfg("rm", run="whole", train={"max_steps": 6}))
    part = pref_cfg("rm", run="part", train={"max_steps": 3, "save_every": 3})
    rm.run(part)
    rest = pref_cfg("rm", run="part", train={"max_steps": 6, "save_every": 3})
    resumed = rm.run(rest, resume=True)
    assert _train_losses(resumed) == pytest.approx(_train_losses(whole), rel=1e-5)
    from safetensors.torch import load_file

    a, b = load_file(str(whole / "reward_head.safetensors")), load_file(str(resumed / "reward_head.safetensors"))
    assert torch.allclose(a["weight"], b["weight"], atol=1e-6)


def test_dpo_grad_accumulation_equals_a_bigger_batch(pref_cfg):
    big = dpo.run(pref_cfg("dpo", run="big", train={"max_steps": 3, "batch_size": 4}))
    small = dpo.run(pref_cfg("dpo", run="acc", train={"max_steps": 3, "batch_size": 2, "grad_accum": 2}))
    # the same pairs per step (bucketing differs by batch size, so compare the first step only)
    assert _train_losses(small)[0] == pytest.approx(_train_losses(big)[0], rel=1e-4)


def test_dpo_reference_is_the_base_and_never_moves(pref_cfg, tiny_llama_dir):
    """With LoRA the reference forward equals a freshly loaded base model's, after training."""
    from deltatune.config import ModelConfig
    from deltatune.data import load_records
    from deltatune.data.preference import build_preference_dataset, collate_pairs
    from deltatune.methods.core import apply_method
    from deltatune.methods.registry import get_method
    from deltatune.models.loader import load_causal_lm
    from deltatune.preference.forward import pair_logps
    from deltatune.preference.objectives import dpo_objective
    from deltatune.training.loop import train
    from deltatune.training.reference import Reference

    cfg = pref_cfg("dpo", train={"max_steps": 4})
    model, tok = load_causal_lm(ModelConfig(name=str(tiny_llama_dir)), device="cpu")
    pairs = build_preference_dataset(load_records(cfg.data.train), tok, cfg.data)
    installed = apply_method(model, cfg.method)
    reference = Reference.for_method(model, get_method(cfg.method))
    from pathlib import Path

    Path(cfg.output.dir).mkdir(parents=True)
    train(model, installed, pairs, None, cfg, cfg.output.dir, tok.pad_token_id,
          objective=dpo_objective(cfg.preference, reference))
    batch = collate_pairs([pairs[i] for i in range(4)], tok.pad_token_id)
    fresh, _ = load_causal_lm(ModelConfig(name=str(tiny_llama_dir)), device="cpu")
    with reference.model() as ref:
        ref_logps, _ = pair_logps(ref, batch)
    with torch.no_grad():
        base_logps, _ = pair_logps(fresh, batch)
        policy_logps, _ = pair_logps(model, batch)
    assert torch.equal(ref_logps, base_logps)
    assert not torch.allclose(policy_logps, base_logps)  # the policy did move


def test_dpo_full_reference_copy_equals_precomputed_reference(pref_cfg):
    """`full` trains the base weights: a frozen copy or log-probs computed once give one run."""
    method = {"name": "full"}
    copied = dpo.run(pref_cfg("dpo", run="copy", method=method, train={"max_steps": 3, "lr": 1e-4}))
    pre = dpo.run(pref_cfg("dpo", run="pre", method=method, train={"max_steps": 3, "lr": 1e-4},
                           preference={"precompute_ref": True}))
    assert _train_losses(pre) == pytest.approx(_train_losses(copied), rel=1e-4, abs=1e-6)
    assert _train_losses(pre)[-1] < _train_losses(pre)[0]


def test_dpo_continues_from_an_sft_run(pref_cfg, tmp_path):
    """`model.name: RUN_DIR` starts from that run (adapter merged): its model is the reference."""
    from deltatune.recipes import sft

    answers = [{"instruction": f"What colour is door {i}?", "output": f"Door {i} is red."} for i in range(24)]
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in answers))
    sft_cfg = pref_cfg("sft", run="sft", train={"max_steps": 3}, data={"train": str(path), "val": None})
    sft_dir = sft.run(sft_cfg)
    raw = pref_cfg("dpo", run="dpo", train={"max_steps": 3}, eval={"before_after": True}).model_dump(mode="json")
    raw["model"]["name"] = str(sft_dir)
    from deltatune.config import validate_config

    run_dir = dpo.run(validate_config(raw))
    assert _eval(run_dir)["before"]["val"]["reward_accuracy"] == 0.5  # reference == the SFT model
    from deltatune.models.runs import load_target

    loaded = load_target(str(run_dir))  # the DPO run loads over the SFT run over the base
    assert loaded.run_cfg.model.name == str(sft_dir)


def test_score_cli_prints_a_reward_and_refuses_a_non_rm_run(pref_cfg, capsys):
    from deltatune.cli import main

    rm_dir = rm.run(pref_cfg("rm", run="rm", train={"max_steps": 8}))
    capsys.readouterr()  # the training run's own output
    assert main(["score", str(rm_dir), "What colour is Ada's door?", "Ada's door is red.", "Ada's door is blue."]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    scores = [float(line.split()[0]) for line in lines]
    assert len(scores) == 2 and scores[0] > scores[1]
    dpo_dir = dpo.run(pref_cfg("dpo", run="notrm", train={"max_steps": 1}))
    assert main(["score", str(dpo_dir), "q", "a"]) == 2
    assert "not a trained reward model" in capsys.readouterr().err
