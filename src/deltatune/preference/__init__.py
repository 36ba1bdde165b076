"""deltatune.preference: what `recipe: rm` and `recipe: dpo` share beyond the training loop.

    splits = load_pair_splits(cfg, tokenizer)                # train / val / test pair datasets
    logps = pair_logps(model, batch)                         # (2B,) answer log-probs, one forward
    objective = dpo_objective(cfg.preference, reference)     # deltatune.training.objective
    metrics = dpo_metrics(model, splits.val, cfg.preference, reference, batch_size, pad_id)
    rm = RewardModel.load("runs/rm"); rm.score([("prompt", "answer")])   # `deltatune score`

Modules: splits (pair files -> tokenised splits, a validation split carved when none is
given), forward (log-probs and reward-head scores of a pair batch), objectives (the loss the
loop optimises, per recipe), metrics (held-out pairwise / reward accuracy and margins),
reward_model (a finished `rm` run as a scorer), cli (`deltatune score`). The losses themselves
are deltatune.losses.preference and deltatune.losses.reward; the pair data format is
deltatune.data.preference.
"""
