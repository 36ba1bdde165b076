"""RLHF with PPO (Ouyang et al. 2022; Schulman et al. 2017): sample replies, score them, and
update the policy with a clipped objective against advantages from a learned value function.

    deltatune train configs/smollm2/ppo_lora.yaml [rl.adaptive_kl=true] [--resume]

Per iteration (deltatune.rl.loop): the reward of a reply is the `rl.reward` score on its last
token minus rl.kl_coef x the per-token KL to the reference (the model with the method
switched off; `rl.adaptive_kl` moves the coefficient towards `rl.kl_target`, Ziegler et al.
2019); a value head on the policy's hidden states (deltatune.models.heads; zero at the start;
detached unless rl.shared_value_trunk, so the value loss never moves the policy) gives V(s_t);
GAE(rl.gamma, rl.lam) turns both into advantages (whitened) and returns; rl.ppo_epochs
updates minimise the clipped policy loss + rl.vf_coef x the clipped value loss.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from deltatune.losses.rl import gae, masked_whiten, ppo_policy_loss, ppo_value_loss, shaped_rewards
from deltatune.models.heads import WithHeads, attach_scalar_head, save_head
from deltatune.rl.loop import Algorithm, run_rl
from deltatune.rl.rollout import policy_token_logps, response_mask
from deltatune.rl.stage import finish_stage, prepare_stage

VALUE_HEAD = "value_head"


class DetachedValueHead(nn.Module):
    """The value head on the policy's hidden states with their gradient cut: the value loss
    trains the head only (rl.shared_value_trunk: false). Holds the head, adds no weights."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden.detach())


def ppo_algorithm(cfg, value_head) -> Algorithm:
    rl = cfg.rl

    def advantages(rollout, kl_coef):
        t, mask = rollout.tensors, rollout.mask  # (N, T-1)
        rewards = shaped_rewards(rollout.scores, t["old_logp"], t["ref_logp"], mask, kl_coef, rl.kl_estimator)
        adv, returns = gae(rewards, t["values"], mask, rl.gamma, rl.lam)
        t["advantages"] = masked_whiten(adv, mask) if rl.whiten_advantages else adv
        t["returns"] = returns
        return {"value_mean": float((t["values"] * mask).sum() / mask.sum().clamp(min=1))}

    def loss(model, batch):
        mask = response_mask(batch["labels"])  # (n, T-1)
        logp, values, _ = policy_token_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"],
                                             value_head)
        policy, clip_fraction = ppo_policy_loss(logp, batch["old_logp"], batch["advantages"], mask, rl.clip_eps)
        value = ppo_value_loss(values, batch["values"], batch["returns"], mask, rl.value_clip)
        stats = {"clip_fraction": clip_fraction, "policy_loss": float(policy), "value_loss": float(value)}
        return policy + rl.vf_coef * value, int(mask.sum()), stats

    return Algorithm("ppo", advantages, loss, value_head=value_head)


def run(cfg, resume: bool = False) -> Path:
    """PPO-tune `cfg.model` on the prompts of `cfg.data.train`; returns the run dir."""
    stage = prepare_stage(cfg, resume)
    head = attach_scalar_head(stage.model, VALUE_HEAD, seed=cfg.train.seed)
    with torch.no_grad():  # V = 0 at the start: the first advantages are the returns themselves,
        head.weight.zero_()  # not a random head's noise (which drove the policy off: README)
    installed = WithHeads(stage.installed, {VALUE_HEAD: head})
    value_head = head if cfg.rl.shared_value_trunk else DetachedValueHead(head)
    result = run_rl(stage.model, installed, stage.tokenizer, stage.prompts, cfg, stage.run_dir,
                    ppo_algorithm(cfg, value_head), stage.reward, stage.reference, stage.resume_from)
    save_head(head, stage.run_dir / "value_head.safetensors", kind="value")
    return finish_stage(stage, cfg, result)
