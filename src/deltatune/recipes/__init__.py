"""deltatune.recipes: one file per training stage, and the one table of them.

    RECIPES["sft"]  -> "deltatune.recipes.sft"   (a module with `run(cfg, resume=False) -> Path`)

The config's valid `recipe:` values are this table's keys; `deltatune train` imports the
module the config names. A new stage is one recipe file + one row here.
"""

RECIPES: dict[str, str] = {
    "sft": "deltatune.recipes.sft",  # supervised (instruction) fine-tuning
    "pt": "deltatune.recipes.pt",  # continued pre-training on raw text
    "rm": "deltatune.recipes.rm",  # reward model: scalar head, Bradley-Terry on ranked pairs
    "dpo": "deltatune.recipes.dpo",  # preference optimisation: DPO, IPO, hinge, SimPO, ORPO
    "ppo": "deltatune.recipes.ppo",  # RLHF: rollouts, reward, KL-shaped GAE, clipped PPO updates
    "grpo": "deltatune.recipes.grpo",  # group-relative policy optimisation, no value model
    "cls": "deltatune.recipes.cls",  # sequence classification: encoder or decoder + a K-way head
}
