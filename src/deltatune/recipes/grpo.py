"""GRPO (Shao et al. 2024): sample a group of replies per prompt, reward each, and push the policy
towards the replies that beat their group — no value model.

    deltatune train configs/smollm2/grpo_lora.yaml [rl.grpo_loss=sequence] [--resume]

Per iteration (deltatune.rl.loop): rl.prompts_per_step prompts x rl.num_samples replies; the
advantage of a reply is its reward minus the group's mean, divided by the group's std
(`rl.scale_rewards: false`: not divided, Dr. GRPO); the loss is the clipped ratio objective
plus rl.kl_coef x the k3 KL to the reference (the base with the method switched off), averaged
per token over the batch (`rl.grpo_loss: token`, DAPO) or per reply then over replies
(`sequence`, the original) — deltatune.losses.rl.GRPO_LOSSES.
"""

from __future__ import annotations

from pathlib import Path

from deltatune.losses.rl import GRPO_LOSSES, group_advantages
from deltatune.rl.loop import Algorithm, run_rl
from deltatune.rl.rollout import policy_token_logps, response_mask
from deltatune.rl.stage import finish_stage, prepare_stage


def grpo_algorithm(cfg) -> Algorithm:
    rl = cfg.rl
    loss_of = GRPO_LOSSES[rl.grpo_loss]

    def advantages(rollout, kl_coef):
        adv = group_advantages(rollout.scores, rl.num_samples, scale=rl.scale_rewards)  # (N,)
        rollout.tensors["advantages"] = adv
        solved = (adv != 0).float().mean()
        return {"groups_with_signal": float(solved)}  # share of replies whose group rewards differ

    def loss(model, batch):
        mask = response_mask(batch["labels"])  # (n, T-1)
        logp, _, _ = policy_token_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        value, stats = loss_of(logp, batch["old_logp"], batch.get("ref_logp"), batch["advantages"], mask,
                               rl.clip_eps, rl.kl_coef)
        return value, int(mask.sum()), stats

    return Algorithm("grpo", advantages, loss, uses_reference=rl.kl_coef > 0)


def run(cfg, resume: bool = False) -> Path:
    """GRPO-tune `cfg.model` on the prompts of `cfg.data.train`; returns the run dir."""
    stage = prepare_stage(cfg, resume)
    result = run_rl(stage.model, stage.installed, stage.tokenizer, stage.prompts, cfg, stage.run_dir,
                    grpo_algorithm(cfg), stage.reward, stage.reference, stage.resume_from)
    return finish_stage(stage, cfg, result)
