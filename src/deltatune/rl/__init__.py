"""deltatune.rl: what `recipe: ppo` and `recipe: grpo` share — prompts, rewards, rollouts, the loop.

    reward = build_reward(cfg.rl.reward)                     # rm run dir / contains / exact / python: / judge:
    rollout = sample_rollout(policy, tokenizer, records, cfg, iteration)   # completions as tensors
    run_rl(model, installed, tokenizer, prompts, cfg, run_dir, algorithm, reward, reference, resume_from)

Modules: prompts (prompt records -> chat turns, reference answers, the prompts of each
iteration), rewards (the reward sources behind `rl.reward`), rollout (sampling and scoring a
batch of completions: old / reference log-probs, entropy), loop (iterations of rollout ->
advantages -> several update epochs, checkpoints with exact resume, metrics and the plot),
evaluate (greedy held-out reward and accuracy). The math is deltatune.losses.rl; each
recipe (ppo.py, grpo.py) only says how it turns a rollout into advantages and a loss.
"""
