"""How a reward model reads a sequence and where its head starts: `preference.reward_pooling`
(last token / the answer's mean) and `preference.head_init: probe` (LP-FT), checked by hand and
end to end on the tiny Llama; `deltatune score` reads a run the way its training did."""

from __future__ import annotations

import json

import pytest
import torch

from deltatune.models.heads import answer_mean_hidden
from deltatune.preference.head_init import fit_probe
from deltatune.recipes import rm


def test_answer_mean_averages_the_labelled_tokens_and_falls_back_to_the_last():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    labels = torch.tensor([[-100, 7, 8, -100], [-100, -100, -100, -100]])  # row 1: no answer tokens
    pooled = answer_mean_hidden(hidden, mask, labels)
    assert torch.equal(pooled[0], (hidden[0, 1] + hidden[0, 2]) / 2)
    assert torch.equal(pooled[1], hidden[1, 2])  # its last real token


def test_probe_finds_the_direction_that_ranks_the_pairs():
    gen = torch.Generator().manual_seed(0)
    truth = torch.randn(16, generator=gen)
    rejected = torch.randn(200, 16, generator=gen) * 3 + 5  # offset: the bias must centre it
    chosen = rejected + 0.5 * truth + 0.3 * torch.randn(200, 16, generator=gen)
    weight, bias, accuracy = fit_probe(chosen, rejected)
    assert accuracy == 1.0
    assert torch.nn.functional.cosine_similarity(weight, truth, dim=0) > 0.9
    rewards = torch.cat([chosen, rejected]) @ weight + bias
    assert abs(float(rewards.mean())) < 1e-4  # centred: the pairwise loss cannot see the bias


def _eval(run_dir):
    return json.loads((run_dir / "eval.json").read_text())


@pytest.mark.parametrize("pooling", ["last", "answer_mean"])
def test_probe_start_ranks_pairs_before_training_and_training_keeps_it(pref_cfg, pooling):
    cfg = pref_cfg("rm", train={"max_steps": 4, "lr": 1e-3, "eval_every": 2}, eval={"before_after": True},
                   preference={"reward_pooling": pooling, "head_init": "probe"})
    run_dir = rm.run(cfg)
    probe = json.loads((run_dir / rm.PROBE_FILE).read_text())
    result = _eval(run_dir)
    assert probe["pairs"] == 24 and probe["probe_train_accuracy"] >= 0.9
    assert result["head_probe"] == probe
    # the probe alone already ranks held-out pairs better than the random head did
    assert probe["held_out"]["val"]["pairwise_accuracy"] > result["before"]["val"]["pairwise_accuracy"]
    assert result["after"]["val"]["pairwise_accuracy"] >= 0.75
    assert json.loads((run_dir / "reward_head.json").read_text())["pooling"] == pooling
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    start = [r for r in rows if r.get("event") == "val" and r["step"] == 0]
    # step 0 is validated, so the probe itself can be the best weights
    assert len(start) == 1 and start[0]["val_loss"] == pytest.approx(probe["held_out"]["val"]["loss"], abs=1e-5)


def test_score_reads_a_run_the_way_training_scored_it(pref_cfg, tiny_llama_dir):
    """The held-out chosen answers' mean reward in eval.json == `RewardModel.score` of the
    same (prompt, answer) texts: the scorer renders and pools (answer tokens only) as training did."""
    from deltatune.data.sources import load_records
    from deltatune.preference.reward_model import RewardModel

    cfg = pref_cfg("rm", train={"max_steps": 3}, preference={"reward_pooling": "answer_mean"})
    run_dir = rm.run(cfg)
    records = load_records(cfg.data.val)
    scorer = RewardModel.load(run_dir)
    chosen = scorer.score([(r["prompt"], r["chosen"]) for r in records])
    rejected = scorer.score([(r["prompt"], r["rejected"]) for r in records])
    after = _eval(run_dir)["after"]["val"]
    assert sum(chosen) / len(chosen) == pytest.approx(after["mean_reward_chosen"], abs=1e-4)
    assert sum(rejected) / len(rejected) == pytest.approx(after["mean_reward_rejected"], abs=1e-4)


def test_resumed_probe_run_keeps_the_trained_head_and_the_probe_numbers(pref_cfg):
    whole = rm.run(pref_cfg("rm", run="whole", train={"max_steps": 4}))
    rm.run(pref_cfg("rm", run="part", train={"max_steps": 2, "save_every": 2}))
    resumed = rm.run(pref_cfg("rm", run="part", train={"max_steps": 4, "save_every": 2}), resume=True)
    losses = [json.loads(line)["loss"] for line in (resumed / "metrics.jsonl").read_text().splitlines()
              if json.loads(line).get("event") == "train"]
    expected = [json.loads(line)["loss"] for line in (whole / "metrics.jsonl").read_text().splitlines()
                if json.loads(line).get("event") == "train"]
    assert losses == pytest.approx(expected, rel=1e-5)
    assert _eval(resumed)["head_probe"]["pairs"] == 24


def test_fine_tuning_that_only_hurts_gives_back_the_probe(pref_cfg):
    """lr 0.5 wrecks the model within a step; best-weight restore must return the step-0 probe."""
    cfg = pref_cfg("rm", train={"max_steps": 4, "lr": 0.5, "eval_every": 2}, eval={"before_after": True})
    run_dir = rm.run(cfg)
    result = _eval(run_dir)
    assert result["restored_best_step"] == 0
    assert result["after"]["val"] == pytest.approx(result["head_probe"]["held_out"]["val"], abs=1e-5)
