"""deltatune.replay: training data that comes from running the base model, against forgetting.

    from deltatune.replay.answers import self_replay_records
    from deltatune.replay.teacher import attach_teacher_topk
    records = self_replay_records(base_model, tokenizer, "builtin:general/prompts")  # cached
    attach_teacher_topk(base_model, replay_set, k=16, pad_id=tokenizer.pad_token_id)

Modules: answers (the base model's own greedy answers to replay prompts, as `messages`
records, cached under $DELTATUNE_HOME/replay), teacher (its top-k next-token distribution on
those examples, for logit distillation). Both run the model, which is why they live here and
not in the data pipeline; the pipeline (deltatune.data) tokenises and collates what they make.
Recipes call them on the base model before any method is applied (`data.replay`,
`data.replay_topk`).
"""
