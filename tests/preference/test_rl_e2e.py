"""`recipe: ppo` and `recipe: grpo` on the tiny Llama with a toy rule reward: the reward rises,
the per-iteration metrics and plot are written, resume reproduces the uninterrupted run, a bad
reward fails before sampling."""

from __future__ import annotations

import json

import pytest

from deltatune.errors import DeltatuneError
from deltatune.recipes import grpo, ppo

RL = {"reward": "python:rl_toy_rewards:says_red", "prompts_per_step": 4, "num_samples": 4,
      "max_new_tokens": 8, "kl_coef": 0.01}


@pytest.fixture
def sft_start(pref_cfg, tmp_path):
    """A tiny model that SFT taught to answer "... is red." or "... is blue." about half and half:
    a random model's near-uniform replies give RL no signal, this one gives a clear one."""
    from deltatune.recipes import sft

    names = ["Ada", "Bo", "Cy", "Dee", "Eli", "Fay", "Gus", "Hal", "Ivy", "Jo", "Kai", "Lu"]
    rows = [{"instruction": f"What colour is {n}'s door?", "output": f"{n}'s door is {c}."}
            for n in names for c in ("red", "blue")]
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # shared_prefix off: full fine-tuning at lr 1e-2 amplifies its 1e-6-level summation-order
    # differences, and the RL margins below were set on the start this exact run gives
    cfg = pref_cfg("sft", run="sft", method={"name": "full"},
                   train={"max_steps": 40, "lr": 1e-2, "shared_prefix": False},
                   data={"train": str(path), "val": None})
    return str(sft.run(cfg))


def _rl_rows(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("event") == "rl"]


def _cfg(pref_cfg, recipe, start, run="run", steps=12, **rl):
    cfg = pref_cfg(recipe, run=run, train={"max_steps": steps, "lr": 5e-3, "batch_size": 8},
                   rl={**RL, **rl}, data={"val": None})
    cfg.model.name = start
    return cfg


# The reward is a rate over 16 samples an iteration, so the mean of the first 5 iterations vs the
# last 10 carries binomial noise of ~0.07 (std of the difference); a rise of 0.15 is > 2 of those
# above no learning. Measured (1 and 2 threads, seeded): grpo 0.525 -> 0.775, grpo sequence
# 0.50 -> 0.75, ppo 0.46 -> 0.78.
STEPS = 30
RISE = 0.15


@pytest.mark.parametrize("recipe, extra", [(grpo, {}), (grpo, {"grpo_loss": "sequence"}), (ppo, {})])
def test_rl_raises_the_reward_and_logs_every_iteration(pref_cfg, sft_start, recipe, extra):
    run_dir = recipe.run(_cfg(pref_cfg, recipe.__name__.rsplit(".", 1)[-1], sft_start, steps=STEPS, **extra))
    rows = _rl_rows(run_dir)
    assert len(rows) == STEPS
    first, last = (sum(r["reward_mean"] for r in rows[:5]) / 5, sum(r["reward_mean"] for r in rows[-10:]) / 10)
    assert last > first + RISE, ([round(r["reward_mean"], 3) for r in rows], [r["kl"] for r in rows])
    for key in ("kl", "entropy", "clip_fraction", "response_length"):
        assert all(key in r for r in rows)
    assert (run_dir / "rl.png").is_file() and (run_dir / "adapter").is_dir()


def test_ppo_logs_value_loss_and_saves_its_value_head(pref_cfg, tiny_llama_dir):
    run_dir = ppo.run(_cfg(pref_cfg, "ppo", str(tiny_llama_dir), steps=2))
    assert all("value_loss" in r for r in _rl_rows(run_dir))
    assert (run_dir / "value_head.safetensors").is_file()


@pytest.mark.parametrize("shared", [False, True])
def test_value_loss_reaches_the_policy_only_with_a_shared_trunk(tiny_llama_dir, shared):
    """rl.shared_value_trunk: false (default) -> the value loss trains the head alone; the
    method's weights get no gradient from it. true -> they do (the control)."""
    import torch

    from deltatune.config import ModelConfig
    from deltatune.methods.core import apply_method
    from deltatune.methods.lora.config import LoraConfig
    from deltatune.models.heads import attach_scalar_head
    from deltatune.models.loader import load_causal_lm
    from deltatune.rl.rollout import policy_token_logps

    model, _ = load_causal_lm(ModelConfig(name=str(tiny_llama_dir)), device="cpu")
    installed = apply_method(model, LoraConfig(r=4, alpha=8, targets="all-linear"))
    with torch.no_grad():  # B != 0, so A's gradient is not zero by construction either way
        for p in installed.trainable():
            p.normal_(0, 0.02)
    head = attach_scalar_head(model, ppo.VALUE_HEAD)
    value_head = head if shared else ppo.DetachedValueHead(head)
    ids = torch.randint(3, 50, (2, 10))
    _, values, _ = policy_token_logps(model, ids, torch.ones_like(ids), ids, value_head)
    (values ** 2).mean().backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    method_grads = [p.grad for p in installed.trainable()]
    if shared:
        assert any(g is not None and g.abs().sum() > 0 for g in method_grads)
    else:
        assert all(g is None or g.abs().sum() == 0 for g in method_grads)


@pytest.mark.parametrize("recipe", [grpo, ppo])
def test_rl_resume_reproduces_the_uninterrupted_run(pref_cfg, tiny_llama_dir, recipe):
    name, start = recipe.__name__.rsplit(".", 1)[-1], str(tiny_llama_dir)
    whole = recipe.run(_cfg(pref_cfg, name, start, run="whole", steps=4))
    part = _cfg(pref_cfg, name, start, run="part", steps=2)
    part.train.save_every = 2
    recipe.run(part)
    rest = _cfg(pref_cfg, name, start, run="part", steps=4)
    resumed = recipe.run(rest, resume=True)
    keys = ("reward_mean", "kl", "loss")
    got = [r[k] for r in _rl_rows(resumed) for k in keys]
    want = [r[k] for r in _rl_rows(whole) for k in keys]
    assert got == pytest.approx(want, rel=1e-4, abs=1e-6)


def test_a_reward_that_is_not_a_reward_model_fails_before_sampling(pref_cfg, tiny_llama_dir, tmp_path):
    from deltatune.recipes import dpo

    not_rm = dpo.run(pref_cfg("dpo", run="dpo", train={"max_steps": 1}))
    start = str(tiny_llama_dir)
    with pytest.raises(DeltatuneError, match="not a trained reward model"):
        grpo.run(_cfg(pref_cfg, "grpo", start, run="bad", reward=str(not_rm)))
    assert not (tmp_path / "bad").exists()  # nothing written
    with pytest.raises(DeltatuneError, match="cannot import"):
        grpo.run(_cfg(pref_cfg, "grpo", start, run="bad2", reward="python:no_such_module:f"))
