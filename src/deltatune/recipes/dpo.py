"""Direct preference optimisation and its reference-free cousins, with any method.

    deltatune train configs/smollm2/dpo_lora.yaml [preference.loss=simpo preference.beta=2] [--resume]

`preference.loss` picks one row of deltatune.losses.preference.PREFERENCE_LOSSES: sigmoid
(DPO, Rafailov et al. 2023), ipo, hinge, and the reference-free simpo (Meng et al. 2024) and
orpo (Hong et al. 2024). The reference (deltatune.training.reference) is the model with the
method switched off — no second copy — or, for methods that train base weights in place, a
frozen copy; `preference.precompute_ref: true` instead scores every pair under the reference
once before training (no copy, one forward fewer per step).

Reads top to bottom: seed -> model (a base, or `model.name: RUN_DIR` of an SFT run: its
adapter merged, so that run is the reference) -> pairs -> method -> run dir -> reference ->
base numbers (held-out pairs; the general probe, cached) -> the training loop on the
preference loss -> adapter -> held-out `reward_accuracy`, margins and the probe -> eval.json.
"""

from __future__ import annotations

from pathlib import Path

from deltatune.atomic import write_jsonl_atomic
from deltatune.eval.measures import forgetting_measures
from deltatune.eval.report import write_eval_json
from deltatune.losses.preference import PREFERENCE_LOSSES
from deltatune.methods.core import apply_method, save_adapter
from deltatune.methods.registry import get_method
from deltatune.preference.metrics import dpo_metrics, precompute_reference
from deltatune.preference.objectives import dpo_objective
from deltatune.preference.splits import load_pair_splits, measured_splits
from deltatune.recipes import common
from deltatune.training.budget import validation_batch_size
from deltatune.training.loop import train
from deltatune.training.progress import say
from deltatune.training.reference import Reference
from deltatune.training.rundir import prepare_run_dir



def general_splits(cfg) -> dict[str, str]:
    """The QA / prompt splits measured as in `sft`: the general probe and the KL prompts."""
    return {name: spec for name, spec in (("probe", cfg.data.probe), ("forgetting", cfg.data.forgetting_prompts))
            if spec}


def _measure(model, tokenizer, splits, cfg, reference) -> dict:
    size = validation_batch_size(cfg.train)
    out = {name: dpo_metrics(model, ds, cfg.preference, reference, size, tokenizer.pad_token_id)
           for name, ds in measured_splits(splits).items()}
    general = general_splits(cfg)
    return {**out, **(common.evaluate_model(model, tokenizer, cfg, general) if general else {})}


def _reference(model, cfg, splits, pad_id) -> Reference | None:
    """The reference policy, with the pairs' reference log-probs precomputed when asked."""
    if not PREFERENCE_LOSSES[cfg.preference.loss].needs_reference:
        return None
    precompute = cfg.preference.precompute_ref
    reference = Reference.for_method(model, get_method(cfg.method), copy_if_needed=not precompute)
    if reference.is_copy:
        say("reference: a frozen copy of the model (the method trains base weights in place)")
    if precompute:
        say("reference: scoring every pair once (preference.precompute_ref) ...")
        for ds in (splits.train, *measured_splits(splits).values()):
            precompute_reference(ds, reference, validation_batch_size(cfg.train), pad_id)
    return reference


def run(cfg, resume: bool = False) -> Path:
    """Preference-tune `cfg.model` on `cfg.data`'s pairs; returns the run dir."""
    common.seed_everything(cfg.train.seed)
    group = common.setup_process(cfg)
    model, tokenizer = group.main_first(lambda: common.load_for_training(cfg))
    splits = load_pair_splits(cfg, tokenizer)
    common.describe_dataset("train pairs", splits.train)

    common.seed_everything(cfg.train.seed)
    installed = apply_method(model, cfg.method, tokenizer=tokenizer)
    run_dir = prepare_run_dir(cfg, resume)
    resume_from = common.resume_point(run_dir, resume)
    reference = _reference(model, cfg, splits, tokenizer.pad_token_id)
    if not group.is_main:  # the other processes of a torchrun launch only train; rank 0 writes
        train(model, installed, splits.train, splits.val, cfg, run_dir, tokenizer.pad_token_id, resume_from,
              objective=dpo_objective(cfg.preference, reference))
        return run_dir
    if splits.val_records:
        write_jsonl_atomic(run_dir / common.HELDOUT_VAL, splits.val_records)
    before = common.read_before(run_dir) if resume_from else None
    if cfg.eval.before_after and before is None:
        say("measuring the base model ...")
        before = common.measure_base(model, lambda: _measure(model, tokenizer, splits, cfg, reference))
        write_eval_json(run_dir / "eval.json", {"before": before})  # kept across --resume
    trainable, total = common.print_parameter_counts(model)
    result = train(model, installed, splits.train, splits.val, cfg, run_dir, tokenizer.pad_token_id, resume_from,
                   desc=cfg.preference.loss, objective=dpo_objective(cfg.preference, reference))

    save_adapter(model, cfg.method, run_dir / "adapter", common.base_model_path(cfg))
    say("evaluating the tuned model ...")
    after = _measure(model, tokenizer, splits, cfg, reference)
    extra = {**common.training_summary(result, trainable, total), "data": splits.notes,
             "preference": cfg.preference.model_dump(),
             "forgetting": forgetting_measures(before, after) if before else None}
    common.finish_report(run_dir, before, after, extra, model)
    return run_dir
