"""Supervised fine-tuning (instruction tuning) of a causal LM, with any method in the registry.

    deltatune train configs/smollm2/sft_lora.yaml [train.lr=1e-4 ...] [--resume]
    python -c "from deltatune.config import load_config; from deltatune.recipes import sft; \
               sft.run(load_config('configs/smollm2/sft_lora.yaml'))"

Reads top to bottom: seed -> load the model -> load and tokenise the data (a bad file fails
here, before anything is written; without `data.val` a validation split is carved from
`data.train`; replay sized to the data) -> apply the method (LoRA / full / freeze ...) -> run
dir -> measure the base model (method switched off; cached) -> the training loop
(`deltatune.training.loop.train`: a budget sized to the data, grad accumulation, clipping,
schedule, validation, early stopping, NaN guard, atomic checkpoints, exact resume) -> save
the adapter -> evaluate the tuned model -> did it learn? what did it forget? -> eval.json,
loss.png, table. The loss is computed on response tokens only, and the vocabulary projection
only runs there.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from deltatune.data import TokenizedDataset, build_sft_dataset, load_records
from deltatune.data.carve import MIN_ROWS, carve_validation
from deltatune.replay.sizing import choose_replay, truncate_answers, weigh_replay
from deltatune.replay.teacher import attach_teacher_topk
from deltatune.replay.answers import self_replay_records
from deltatune.atomic import write_jsonl_atomic
from deltatune.errors import DeltatuneError
from deltatune.eval.measures import forgetting_measures
from deltatune.eval.verdict import learning_verdict, print_verdict
from deltatune.eval.report import write_eval_json
from deltatune.methods.core import apply_method, save_adapter
from deltatune.methods.registry import get_method
from deltatune.recipes import common
from deltatune.training.budget import validation_batch_size
from deltatune.training.loop import train
from deltatune.training.progress import say
from deltatune.training.rundir import prepare_run_dir

HELDOUT_VAL = common.HELDOUT_VAL  # the carved validation records, in the run dir


@dataclasses.dataclass
class SftData:
    """What `load_datasets` prepared: the tokenised sets and how they were made (for the log,
    eval.json and the held-out file the run dir keeps)."""

    train: TokenizedDataset
    val: TokenizedDataset | None
    val_records: list[dict] | None  # carved from data.train (None when data.val names a file)
    notes: dict


def load_datasets(cfg, tokenizer, base_model=None) -> SftData:
    """The tokenised training / validation sets; every data error surfaces here.

    Without `data.val`, `data.val_split` of the training records is held out (deltatune.data.
    carve). With `data.replay`, `base_model` (before any method is applied) first answers the
    replay prompts and a share of those examples sized to the user's data joins the training
    set, weighted as `data.replay_weight` says (deltatune.replay.sizing)."""
    data = cfg.data
    if (data.replay_topk or data.replay_weight != 1.0 or data.replay_answer_tokens) and not data.replay:
        say("note: data.replay is off, so data.replay_topk / data.replay_weight / data.replay_answer_tokens "
            "have nothing to act on")
    records, val_records, notes = load_records(data.train), None, {}
    if data.val:
        val_set = build_sft_dataset(load_records(data.val), tokenizer, data)
        notes["validation"] = {"source": data.val, "n": len(val_set)}
    else:
        records, val_records = carve_validation(records, data.val_split, cfg.train.seed)
        val_set = build_sft_dataset(val_records, tokenizer, data) if val_records else None
        notes["validation"] = _carve_note(data, val_records, len(records))
    train_set = build_sft_dataset(records, tokenizer, data)
    if len(train_set) == 0:
        raise DeltatuneError(f"data.train {data.train}: no usable examples after tokenisation")
    if data.replay:
        train_set, notes["replay"] = _with_replay(train_set, cfg, tokenizer, base_model)
    # test / probe are loaded by the evaluator; read them now so a typo fails before training
    for spec in (data.test, data.probe, data.forgetting_prompts, *cfg.eval.extra.values()):
        if spec:
            load_records(spec)
    return SftData(train_set, val_set, val_records, notes)


def _carve_note(data, val_records, n_train: int) -> dict:
    if val_records:
        say(f"data.val not given: held out {len(val_records)} of {n_train + len(val_records)} training "
            f"examples as validation (data.val_split {data.val_split:g}); saved as val_heldout.jsonl in the run dir")
        return {"source": "carved from data.train", "n": len(val_records), "val_split": data.val_split}
    why = ("data.val_split is 0" if data.val_split <= 0
           else f"data.train has only {n_train} rows (at least {MIN_ROWS} are needed to hold some out)")
    say(f"warning: no validation split ({why}): training on every row; nothing held out will be measured. "
        f"Pass data.val=FILE to measure what the run learnt.")
    return {"source": None, "n": 0, "warning": f"no validation split: {why}; nothing held out was measured"}


def _with_replay(train_set, cfg, tokenizer, base_model):
    """`train_set` plus the sized, weighted replay examples, and a note of what was added."""
    data = cfg.data
    replay = [record for spec in data.replay_sources()
              for record in self_replay_records(base_model, tokenizer, spec, data.system_prompt,
                                                data.replay_max_new_tokens, cfg.eval.batch_size)]
    replay_set = build_sft_dataset(replay, tokenizer, data.model_copy(update={"format": "messages"}))
    chosen = choose_replay(replay_set.examples, len(train_set), data.replay_ratio, cfg.train.seed)
    # copies: weights / teacher targets go on them; cut to data.replay_answer_tokens first
    chosen = truncate_answers(chosen, data.replay_answer_tokens)
    if data.replay_topk:
        attach_teacher_topk(base_model, TokenizedDataset(chosen, {}), data.replay_topk, tokenizer.pad_token_id)
    weight = weigh_replay(chosen, train_set.examples, data.replay_weight)
    repeated = chosen * data.replay_repeat
    say(f"replay: {len(chosen)} of {len(replay_set)} base-model answers (data.replay_ratio {data.replay_ratio}), "
        f"loss weight {weight:g}" + (f", x{data.replay_repeat}" if data.replay_repeat > 1 else ""))
    note = {"examples": len(chosen), "available": len(replay_set), "weight": weight, "repeat": data.replay_repeat}
    return TokenizedDataset(train_set.examples + repeated, dict(train_set.stats, replay=len(repeated))), note


def evaluation_splits(cfg, run_dir: Path) -> dict[str, str]:
    """{split: spec} the run is measured on: the config's, plus the carved validation file."""
    from deltatune.eval.runner import splits_from_config

    splits = splits_from_config(cfg.data, cfg.eval)  # + eval.extra
    heldout = run_dir / HELDOUT_VAL
    if "val" not in splits and heldout.is_file():
        splits["val"] = str(heldout)
    return splits


def base_val_loss(model, val_set, cfg, tokenizer) -> float:
    from deltatune.training.validator import validation_loss

    return validation_loss(model, val_set, validation_batch_size(cfg.train), tokenizer.pad_token_id, cfg.model.dtype)


def run(cfg, resume: bool = False) -> Path:
    """Fine-tune `cfg.model` on `cfg.data` as `cfg.method` says; returns the run dir."""
    common.seed_everything(cfg.train.seed)
    group = common.setup_process(cfg)
    model, tokenizer = group.main_first(lambda: common.load_for_training(cfg))
    data = group.main_first(lambda: load_datasets(cfg, tokenizer, model))  # rank 0 caches the replay
    common.describe_dataset("train", data.train)

    common.seed_everything(cfg.train.seed)  # the method's init: the same whatever ran before
    # install before anything is written: a config that does not fit the model (targets
    # matching nothing, an init_text too long) fails here with nothing on disk
    installed = apply_method(model, cfg.method, tokenizer=tokenizer)

    run_dir = prepare_run_dir(cfg, resume)
    resume_from = common.resume_point(run_dir, resume)
    if not group.is_main:  # the other processes of a torchrun launch only train; rank 0 writes
        train(model, installed, data.train, data.val, cfg, run_dir, tokenizer.pad_token_id, resume_from)
        return run_dir
    if data.val_records:
        write_jsonl_atomic(run_dir / HELDOUT_VAL, data.val_records)
    splits = evaluation_splits(cfg, run_dir)
    before = common.read_before(run_dir) if resume_from else None
    if cfg.eval.before_after and before is None:
        before = common.measure_before(model, tokenizer, cfg, splits)
        write_eval_json(run_dir / "eval.json", {"before": before})  # kept across --resume
    elif before is None and data.val is not None:  # the verdict still needs the base's val loss
        before = {"val": {"loss": common.measure_base(model, lambda: base_val_loss(model, data.val, cfg, tokenizer))}}
    trainable, total = common.print_parameter_counts(model)
    result = train(model, installed, data.train, data.val, cfg, run_dir, tokenizer.pad_token_id, resume_from, desc="sft")

    save_adapter(model, cfg.method, run_dir / "adapter", common.base_model_path(cfg))
    say("evaluating the tuned model ...")
    after = common.evaluate_model(model, tokenizer, cfg, splits)
    learning = learning_verdict(before, after, data.notes.get("validation"), get_method(cfg.method).capacity_hint)
    extra = {**common.training_summary(result, trainable, total), "data": data.notes, "learning": learning,
             "forgetting": forgetting_measures(before, after)}
    common.finish_report(run_dir, before, after, extra, model)
    print_verdict(learning)
    return run_dir
