"""What to change when a run will not fit a memory budget, each change with its own estimate.

    for s in suggestions(ctx, main, memory_limit):
        print(s.change, s.peak_memory_bytes, s.step_seconds, s.fits)

Tried in this order, each on its own (then the two cheapest together if none fits alone):
- smaller micro-batches, with grad_accum raised to keep the effective batch (and so the
  optimisation) the same: activations shrink with the batch's token cells; steps get slower
  per token only by the lost matmul efficiency (not modelled: the same FLOPs);
- gradient checkpointing (`train.gradient_checkpointing`): each block keeps only its input;
  about one more forward of the blocks per step;
- QLoRA: the decoder's Linears in 4-bit NF4 (for a LoRA-family config, its own keys; for a
  method that trains the base, LoRA r 16 on every Linear); its load lets go of the fp32 file
  after quantising, so it saves on a CPU too: the estimate says how much;
- fewer LoRA targets: the attention projections only (activations of the MLP's LoRA inputs and
  their gradients go away).
Batch and checkpointing changes reuse the probe; a method change probes again.
"""

from __future__ import annotations

import dataclasses

from deltatune.estimate.batches import plan_batches


@dataclasses.dataclass
class Suggestion:
    change: str  # the overrides to pass, e.g. "train.batch_size=4 train.grad_accum=2"
    why: str
    peak_memory_bytes: int
    step_seconds: float
    total_minutes: float
    fits: bool

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def suggestions(ctx, main, limit: int) -> list[Suggestion]:
    """Changes of `main` (an estimator `Variant`) with their estimates (module docstring)."""
    from deltatune.estimate.estimator import assemble

    out: list[Suggestion] = []
    smaller = _smaller_batches(ctx, main, limit, out)
    checkpointed = None
    if not main.checkpointing and _has_train_key(main.cfg, "gradient_checkpointing"):
        checkpointed = assemble(ctx, main.cfg, main.counts, main.probe, main.plan, checkpointing=True)
        out.append(_suggest(checkpointed, "train.gradient_checkpointing=true",
                            "recompute each block's activations in backward; keeps only the blocks' inputs", limit))
    for change, why, method_cfg in _method_changes(ctx, main):
        variant = _try_method(ctx, main, method_cfg)
        if variant is not None:
            out.append(_suggest(variant, change, why, limit))
    if out and not any(s.fits for s in out) and smaller is not None and checkpointed is not None:
        both = assemble(ctx, main.cfg, main.counts, main.probe, smaller.plan, checkpointing=True)
        change = f"{_batch_change(smaller.plan)} train.gradient_checkpointing=true"
        out.append(_suggest(both, change, "both together", limit))
    return out


def _smaller_batches(ctx, main, limit: int, out: list[Suggestion]):
    """Halve the micro-batch until the run fits (or batches of 1); the last variant tried."""
    from deltatune.estimate.estimator import assemble

    size, last = main.plan.batch_size, None
    per_step = size * main.plan.grad_accum
    while size > 1:
        size = max(1, size // 2)
        plan = plan_batches(main.cfg, ctx.dataset, ctx.notes, batch_size=size, grad_accum=max(1, per_step // size))
        last = assemble(ctx, main.cfg, main.counts, main.probe, plan, main.checkpointing)
        out.append(_suggest(last, _batch_change(plan), f"micro-batches of {size}, the same {per_step} examples per step",
                            limit))
        if last.memory.peak <= limit:
            break
    return last


def _batch_change(plan) -> str:
    return f"train.batch_size={plan.batch_size} train.grad_accum={plan.grad_accum}"


def _method_changes(ctx, main) -> list[tuple[str, str, object]]:
    """(overrides, why, new method config) for QLoRA and fewer targets, where they apply."""
    from deltatune.methods.lora.config import LoraFamilyConfig
    from deltatune.methods.qlora.config import QloraConfig
    from deltatune.methods.registry import get_method

    method = main.cfg.method
    changes = []
    if isinstance(method, LoraFamilyConfig) and not isinstance(method, QloraConfig):
        keys = {k: v for k, v in method.model_dump().items() if k in QloraConfig.model_fields and k != "name"}
        changes.append(("method.name=qlora", "the frozen decoder Linears in 4-bit NF4 (bitsandbytes)",
                        QloraConfig(**keys)))
    elif get_method(method).trains_base_weights:
        changes.append(("method.name=qlora method.r=16 method.alpha=32 method.targets=all-linear",
                        "QLoRA instead of training the base: no base gradients or AdamW state, the base in 4 bits",
                        QloraConfig(r=16, alpha=32, targets="all-linear")))
    if isinstance(method, LoraFamilyConfig):
        attention = _attention_targets(ctx, main)
        if attention:
            changes.append((f"method.targets=[{','.join(attention)}]", "LoRA on the attention projections only",
                            method.model_copy(update={"targets": attention})))
    return changes


def _attention_targets(ctx, main) -> list[str] | None:
    """Leaf names of the attention Linears of the first block, when the targets reach further."""
    from deltatune.estimate.estimator import load_dtype
    from deltatune.estimate.model_info import build_model
    from deltatune.methods.lora import lora_targets
    from deltatune.methods.modules import find_block_list

    model = build_model(ctx.base.config, load_dtype(main.cfg), "meta", ctx.base.trust_remote_code)
    _, blocks = find_block_list(model)
    names = [name for name, module in blocks[0].named_modules()
             if type(module).__name__ == "Linear" and ("attn" in name or "attention" in name)]
    leaves = sorted({name.rsplit(".", 1)[-1] for name in names})
    targeted = {name.rsplit(".", 1)[-1] for name in lora_targets(model, main.cfg.method)}
    return leaves if leaves and not targeted <= set(leaves) else None


def _try_method(ctx, main, method_cfg):
    """The estimate with another method config, or None when it cannot be made here (e.g.
    bitsandbytes missing for QLoRA)."""
    from deltatune.errors import DeltatuneError
    from deltatune.estimate.estimator import estimate_variant

    cfg = main.cfg.model_copy(update={"method": method_cfg})
    try:
        return estimate_variant(ctx, cfg, main.plan)
    except DeltatuneError:
        return None


def _suggest(variant, change: str, why: str, limit: int) -> Suggestion:
    return Suggestion(change, why, variant.memory.peak, round(variant.timing.step_seconds, 3),
                      round(variant.timing.total_minutes, 2), variant.memory.peak <= limit)


def _has_train_key(cfg, key: str) -> bool:
    return key in type(cfg.train).model_fields
