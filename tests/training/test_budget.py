"""The size-aware budget (`train.epochs: auto`), replay sizing and the carved validation split:
pure functions, checked against the rules their docstrings state."""

from __future__ import annotations

import pytest

from deltatune.config import TrainConfig
from deltatune.data.carve import MIN_ROWS, carve_validation
from deltatune.data.labels import IGNORE_INDEX
from deltatune.replay.sizing import (MIN_REPLAY, REPLAY_SHARE, WEIGHT_RANGE, auto_weight, choose_replay, replay_count,
                                     truncate_answers)
from deltatune.training.budget import (AUTO_BATCH_SIZES, AUTO_MAX_EPOCHS, AUTO_MIN_EPOCHS, AUTO_VISITS,
                                       MIN_STEPS_PER_EPOCH, auto_batch_size, auto_epochs, plan_budget,
                                       resolved_train_config, train_batch_size, validation_batch_size)


@pytest.mark.parametrize("n, epochs", [(48, AUTO_MAX_EPOCHS), (300, AUTO_VISITS / 300), (810, AUTO_MIN_EPOCHS),
                                       (50_000, AUTO_MIN_EPOCHS)])
def test_auto_epochs_gives_small_sets_more_passes(n, epochs):
    assert auto_epochs(n) == pytest.approx(epochs)


def test_auto_budget_counts_steps_from_the_user_examples():
    cfg = TrainConfig(batch_size=8)  # epochs defaults to auto
    budget = plan_budget(cfg, n_user=48, batches_per_epoch=9)  # 48 rows + 24 replay = 72 / 8
    assert budget.epochs == AUTO_MAX_EPOCHS and budget.total_steps == 9 * AUTO_MAX_EPOCHS
    assert "auto" in budget.rule and "48 training examples" in budget.rule


@pytest.mark.parametrize("n, batch", [(48, 2), (120, 4), (300, 8), (810, 8), (5, AUTO_BATCH_SIZES[-1])])
def test_auto_batch_size_gives_small_sets_more_updates(n, batch):
    assert auto_batch_size(n) == batch
    assert n / batch >= MIN_STEPS_PER_EPOCH or batch == AUTO_BATCH_SIZES[-1]


def test_auto_batch_size_reaches_the_budget_and_the_resolved_config():
    cfg = TrainConfig(batch_size="auto", epochs=2)
    batch = train_batch_size(cfg, 48)
    budget = plan_budget(cfg, n_user=48, batches_per_epoch=36, batch_size=batch)  # 48 + 24 replay, batches of 2
    assert (batch, budget.batch_size, budget.total_steps) == (2, 2, 72)
    assert "train.batch_size auto: 2" in budget.rule
    assert resolved_train_config(cfg, budget).batch_size == 2
    assert validation_batch_size(cfg) == AUTO_BATCH_SIZES[0]
    explicit = TrainConfig(batch_size=3)
    assert train_batch_size(explicit, 48) == 3 == validation_batch_size(explicit)
    assert "batch_size" not in plan_budget(explicit, 48, 16).rule
    with pytest.raises(ValueError):
        TrainConfig(batch_size="big")


def test_replay_answers_are_cut_after_their_first_labelled_tokens():
    prompt = [IGNORE_INDEX] * 3
    long = {"input_ids": list(range(10)), "labels": prompt + list(range(3, 10))}  # 7 answer tokens
    short = {"input_ids": [1, 2, 3, 4], "labels": prompt + [4]}
    cut, kept = truncate_answers([long, short], 4)
    assert cut["input_ids"] == [0, 1, 2, 3, 4, 5, 6] and cut["labels"] == prompt + [3, 4, 5, 6]
    assert kept == short and kept is not short  # copies: weights go on them, not on the originals
    assert long["input_ids"] == list(range(10))  # the input is not modified
    assert truncate_answers([long], None) == [long]


def test_max_steps_wins_over_epochs_and_says_so():
    budget = plan_budget(TrainConfig(epochs=3, max_steps=10), n_user=100, batches_per_epoch=13)
    assert budget.total_steps == 10 and "wins over train.epochs 3" in budget.rule
    assert plan_budget(TrainConfig(max_steps=10), 100, 13).rule == "train.max_steps 10"  # auto: nothing to say


def test_warmup_and_eval_every_auto_scale_with_the_budget():
    cfg = TrainConfig(epochs=4, warmup_steps="auto", eval_every="auto")
    small, large = plan_budget(cfg, 10, 5), plan_budget(cfg, 10, 100)  # 20 and 400 steps
    assert (small.warmup_steps, large.warmup_steps) == (1, 20)
    assert (small.eval_every, large.eval_every) == (3, 50)
    resolved = resolved_train_config(cfg, large)
    assert resolved.warmup_steps == 20 and resolved.eval_every == 50 and resolved.epochs == 4


def test_explicit_values_pass_through():
    cfg = TrainConfig(epochs=1.5, warmup_steps=7, eval_every=5)
    budget = plan_budget(cfg, 810, 115)
    assert (budget.total_steps, budget.warmup_steps, budget.eval_every) == (173, 7, 5)


def test_auto_is_the_only_word_accepted():
    with pytest.raises(ValueError):
        TrainConfig(epochs="lots")
    with pytest.raises(ValueError):
        TrainConfig(epochs=0)


def test_replay_is_sized_to_the_user_data():
    assert replay_count(48, 104, 0.5) == 24
    assert replay_count(10, 104, 0.5) == MIN_REPLAY  # a floor, so a tiny set still gets some
    assert replay_count(810, 104, 0.5) == 104  # capped by what the base answered
    assert replay_count(48, 104, None) == 104
    items = list(range(104))
    chosen = choose_replay(items, 48, 0.5, seed=3)
    assert len(chosen) == 24 and chosen == sorted(chosen) and chosen == choose_replay(items, 48, 0.5, seed=3)
    assert chosen != choose_replay(items, 48, 0.5, seed=4)


def test_auto_weight_gives_replay_a_fixed_share_of_the_loss():
    assert auto_weight(13_000, 15_600) == pytest.approx(REPLAY_SHARE * 13_000 / 15_600)  # ~5: orgfacts
    assert auto_weight(100, 100_000) == WEIGHT_RANGE[0]  # never below 1: replay still counts
    assert auto_weight(100_000, 100) == WEIGHT_RANGE[1]


def test_carved_validation_holds_out_whole_records():
    records = [{"i": i} for i in range(50)]
    train, val = carve_validation(records, 0.1, seed=0)
    assert len(val) == 5 and len(train) == 45
    assert {r["i"] for r in train}.isdisjoint(r["i"] for r in val)
    assert carve_validation(records, 0.1, seed=0) == (train, val)
    assert carve_validation(records[: MIN_ROWS - 1], 0.1, 0) == (records[: MIN_ROWS - 1], None)
    assert carve_validation(records, 0.0, 0)[1] is None
