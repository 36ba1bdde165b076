"""Supervised fine-tuning (instruction tuning) of a causal LM, with any method in the registry.

    deltatune train configs/smollm2/sft_lora.yaml [train.lr=1e-4 ...] [--resume]
    python -c "from deltatune.config import load_config; from deltatune.recipes import sft; \
               sft.run(load_config('configs/smollm2/sft_lora.yaml'))"

Reads top to bottom: seed -> load the model -> load and tokenise the data (a bad file fails
here, before anything is written) -> run dir -> measure the base model -> apply the method
(LoRA / full / freeze ...) -> the training loop (`deltatune.training.loop.train`: grad
accumulation, clipping, schedule, validation, early stopping, NaN guard, atomic checkpoints,
exact resume) -> save the adapter -> evaluate the tuned model -> eval.json, loss.png, table.
The loss is computed on response tokens only, and the vocabulary projection only runs there.
"""

from __future__ import annotations

from pathlib import Path

from deltatune.data import TokenizedDataset, build_sft_dataset, load_records
from deltatune.replay.teacher import attach_teacher_topk
from deltatune.replay.answers import self_replay_records
from deltatune.errors import DeltatuneError
from deltatune.eval.report import write_eval_json
from deltatune.methods.core import apply_method, save_adapter
from deltatune.recipes import common
from deltatune.training.loop import train
from deltatune.training.progress import say
from deltatune.training.rundir import prepare_run_dir


def load_datasets(cfg, tokenizer, base_model=None):
    """(train, val or None) tokenised datasets; every data error surfaces here.

    With `data.replay`, `base_model` (before any method is applied) first answers the replay
    prompts and those examples join the training set (see deltatune.data.replay).
    """
    if (cfg.data.replay_topk or cfg.data.replay_weight != 1.0) and not cfg.data.replay:
        say("note: data.replay is off, so data.replay_topk / data.replay_weight have nothing to act on")
    train_set = build_sft_dataset(load_records(cfg.data.train), tokenizer, cfg.data)
    if len(train_set) == 0:
        raise DeltatuneError(f"data.train {cfg.data.train}: no usable examples after tokenisation")
    if cfg.data.replay:
        replay = [record for spec in cfg.data.replay_sources()
                  for record in self_replay_records(base_model, tokenizer, spec, cfg.data.system_prompt,
                                                    cfg.data.replay_max_new_tokens, cfg.eval.batch_size)]
        replay_set = build_sft_dataset(replay, tokenizer, cfg.data.model_copy(update={"format": "messages"}))
        if cfg.data.replay_topk:
            attach_teacher_topk(base_model, replay_set, cfg.data.replay_topk, tokenizer.pad_token_id)
        if cfg.data.replay_weight != 1.0:
            for example in replay_set.examples:
                example["loss_weight"] = cfg.data.replay_weight
        repeated = replay_set.examples * cfg.data.replay_repeat
        train_set = TokenizedDataset(train_set.examples + repeated, dict(train_set.stats, replay=len(repeated)))
    val_set = build_sft_dataset(load_records(cfg.data.val), tokenizer, cfg.data) if cfg.data.val else None
    # test / probe are loaded by the evaluator; read them now so a typo fails before training
    for spec in (cfg.data.test, cfg.data.probe):
        if spec:
            load_records(spec)
    return train_set, val_set


def evaluate_model(model, tokenizer, cfg) -> dict:
    """{split: {metric: value}} from the eval runner (val loss, test accuracy, probe)."""
    from deltatune.eval.runner import evaluate

    return evaluate(model, tokenizer, cfg.data, cfg.eval)


def run(cfg, resume: bool = False) -> Path:
    """Fine-tune `cfg.model` on `cfg.data` as `cfg.method` says; returns the run dir."""
    common.seed_everything(cfg.train.seed)
    common.setup_threads(cfg.train)
    model, tokenizer = common.load_for_training(cfg)
    train_set, val_set = load_datasets(cfg, tokenizer, model)
    common.describe_dataset("train", train_set)

    common.seed_everything(cfg.train.seed)  # the method's init: the same whatever ran before
    # install before anything is written: a config that does not fit the model (targets
    # matching nothing, an init_text too long) fails here with nothing on disk
    installed = apply_method(model, cfg.method, tokenizer=tokenizer)

    run_dir = prepare_run_dir(cfg, resume)
    resume_from = common.resume_point(run_dir, resume)
    before = common.read_before(run_dir) if resume_from else None
    if cfg.eval.before_after and before is None:
        say("measuring the base model ...")
        before = common.measure_base(model, lambda: evaluate_model(model, tokenizer, cfg))
        write_eval_json(run_dir / "eval.json", {"before": before})  # kept across --resume
    common.print_parameter_counts(model)
    result = train(model, installed, train_set, val_set, cfg, run_dir, tokenizer.pad_token_id, resume_from, desc="sft")

    save_adapter(model, cfg.method, run_dir / "adapter", common.base_model_path(cfg))
    say("evaluating the tuned model ...")
    after = evaluate_model(model, tokenizer, cfg)
    extra = {"steps": result.state.step, "stop_reason": result.stop_reason, "final_val_loss": result.val_loss,
             "restored_best_step": result.restored_step}
    common.finish_report(run_dir, before, after, extra)
    return run_dir
