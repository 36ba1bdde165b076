"""The deltatune side: what `deltatune train` runs each step, built from a minimal config.

    cfg = bench_config(spec)                  # the Config a user's YAML would give; --deltatune-opt applied
    side = DeltatuneSide(spec)                # load (qlora: quantised by the method's own loader),
    loss = side.step(side.collate(examples))  # apply_method, the real OptimiserStep

The model is loaded by the recipes' own `load_for_training`, the method installed by
`apply_method`, and each step is `OptimiserStep.step` with the recipe's loss function: the LM
loss that projects to the vocabulary only at labelled positions (sft), or the DPO objective
with the reference as the policy with its adapter switched off (dpo). `--deltatune-opt
KEY=VALUE` lands in this config (a bare KEY is a `train.` key; `data.KEY` / `method.KEY` too),
so a new training option is measured as soon as the config has it; the bench's batches stay
the shared ones whatever the data keys say.
"""

from __future__ import annotations

from deltatune.bench import flops
from deltatune.bench.workloads import (BETAS, DPO_BETA, LORA_ALPHA, LORA_DROPOUT, LORA_R, LORA_TARGETS,
                                       MAX_GRAD_NORM, WEIGHT_DECAY, BenchSpec, seeded_adapter_init)
from deltatune.errors import DeltatuneError


def bench_config(spec: BenchSpec):
    """The validated deltatune Config of this workload (DeltatuneError names a bad option)."""
    from deltatune.config import apply_override, validate_config

    workload = spec.spec
    method = {"name": workload.method}
    if workload.adapter:
        method.update(r=LORA_R, alpha=LORA_ALPHA, dropout=LORA_DROPOUT, targets=LORA_TARGETS)
    raw = {
        "recipe": workload.objective,
        "model": {"name": spec.model, "dtype": "float32", "device": "cpu"},
        "method": method,
        "data": {"train": workload.data, "max_length": spec.max_length, "val_split": 0.0},
        "train": {"batch_size": spec.batch_size, "grad_accum": 1, "max_steps": spec.total_steps,
                  "lr": spec.learning_rate, "weight_decay": WEIGHT_DECAY, "betas": list(BETAS),
                  "schedule": "constant", "warmup_steps": 0, "max_grad_norm": MAX_GRAD_NORM,
                  "seed": spec.seed, "num_threads": spec.threads},
        "preference": {"loss": "sigmoid", "beta": DPO_BETA},
        "eval": {"before_after": False},
    }
    for item in spec.deltatune_opts:
        key = item.split("=", 1)[0]
        if "=" not in item or not key.strip():
            raise DeltatuneError(f"--deltatune-opt {item!r} must look like KEY=VALUE (e.g. max_grad_norm=0.5)")
        apply_override(raw, item if "." in key else f"train.{item}")
    return validate_config(raw, source="--deltatune-opt")


class DeltatuneSide:
    """deltatune's model, installed method and OptimiserStep for one workload."""

    def __init__(self, spec: BenchSpec):
        from deltatune.methods.core import apply_method, count_parameters
        from deltatune.recipes import common
        from deltatune.training.step import OptimiserStep

        cfg = bench_config(spec)
        common.seed_everything(spec.seed)
        model, self.tokenizer = common.load_for_training(cfg)
        counts = flops.model_counts(model)
        installed = apply_method(model, cfg.method, tokenizer=self.tokenizer)
        seeded_adapter_init(model, spec.seed)
        objective, speed = _with_speed_options(model, cfg.train, _objective(spec, cfg, model), cfg.model.dtype)
        model.train()
        self.model, self.step_number, self.collate_fn = model, 0, objective.collate
        self.dtype = cfg.model.dtype  # float32 unless --deltatune-opt model.dtype=bfloat16
        self.stepper = OptimiserStep(model, installed, cfg.train, spec.total_steps, loss_fn=objective.loss_fn,
                                     units=objective.units)
        trainable, _ = count_parameters(model)
        self.info = {"trainable_params": trainable, "counts": counts,
                     "adapter_params": trainable if spec.spec.adapter else 0,
                     "settings": {"loss": "deltatune.losses (vocabulary projection at labelled positions only)",
                                  "optimiser": "deltatune.training.step.OptimiserStep (torch AdamW, "
                                               f"{_kernel(self.stepper.optimizer)} kernel)",
                                  "config": cfg.train.model_dump(mode="json"), "speed_options": speed,
                                  "deltatune_opts": list(spec.deltatune_opts)}}

    def collate(self, examples: list[dict]) -> dict:
        return self.collate_fn(examples, self.tokenizer.pad_token_id)

    def step(self, batch: dict) -> float:
        self.step_number += 1
        return self.stepper.step([batch], step_number=self.step_number, dtype=self.dtype).loss


def _kernel(optimizer) -> str:
    return "fused" if optimizer.defaults.get("fused") else "default"


def _objective(spec: BenchSpec, cfg, model):
    """The workload's training Objective (loss, units, collation): the recipes' own."""
    if spec.spec.objective == "dpo":
        from deltatune.methods.registry import get_method
        from deltatune.preference.objectives import dpo_objective
        from deltatune.training.reference import Reference

        return dpo_objective(cfg.preference, Reference.for_method(model, get_method(cfg.method)))
    from deltatune.training.objective import LM_OBJECTIVE

    return LM_OBJECTIVE


def _with_speed_options(model, train_cfg, objective, dtype: str):
    """(objective, what was applied) with the training loop's work-cutting options
    (`train.packing`, `train.ce_chunk_tokens`, ...: deltatune.training.speed) when this install
    has them, so `--deltatune-opt packing=true` measures exactly what `deltatune train` runs."""
    try:
        from deltatune.training import speed
    except ImportError:  # an install without the options: nothing to apply
        return objective, {}
    applied = speed.prepare_for_training(model, train_cfg, dtype=dtype)
    return speed.objective_for(train_cfg, objective), applied
