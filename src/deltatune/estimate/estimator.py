"""`estimate_run(cfg) -> Estimate`: peak memory and seconds per step of a training run, before
any weight is loaded. The pieces:

    model_info   config.json + safetensors headers; the method installed on a `meta` model: counts
    batches      the recipe's own data path and the sampler's micro-batches over the run's budget
    probe        the method on 2- and 8-layer real copies, the peak micro-batch: saved activations
                 and effective FLOP/s at the model's shapes (cached)
    calibrate    the process baseline and AdamW's cost per parameter (measured once, cached)
    memory       how the parts make the peak;  flops  FLOPs per micro-batch
    advice       what to change when the peak is over `--memory`

Step time (seconds of one optimiser step; validation and evaluation are not in it):

    step_seconds = grad_accum x (F_layers(mean micro-batch) / R_layers + F_rest / R_rest)
                   + trainable parameters x AdamW seconds per parameter

with F from `estimate.flops` (forward 2 x params x tokens; backward: activation gradients as
much again above the lowest trainable block, weight gradients only for trainable weights) and
R the effective rates the probe measured on the real blocks and head of this model.
"""

from __future__ import annotations

import dataclasses

import torch

from deltatune.estimate.batches import BatchPlan, plan_batches, training_examples
from deltatune.estimate.calibrate import adamw_seconds_per_param, process_baseline_bytes
from deltatune.estimate.flops import micro_batch_flops
from deltatune.estimate.memory import Activations, Memory, memory_estimate, replay_phase_bytes, resident_weights
from deltatune.estimate.model_info import BaseInfo, Counts, architecture, describe_base, meta_counts
from deltatune.estimate.probe import ProbeResult, run_probe
from deltatune.methods.registry import get_method


@dataclasses.dataclass
class Context:
    """What every variant of one config shares: the base, tokenizer, device and training data."""

    cfg: object
    base: BaseInfo
    tokenizer: object
    device: torch.device
    dataset: object  # TokenizedDataset: the user's examples + replay stand-ins
    notes: list[str]
    baseline: int
    baseline_note: str


@dataclasses.dataclass
class Timing:
    step_seconds: float
    forward_backward_seconds: float  # of the step's micro-batches together
    optimizer_seconds: float
    flops_per_step: float
    layer_gflops: float  # effective rates the probe measured
    rest_gflops: float
    total_steps: int
    total_minutes: float

    def as_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass
class Variant:
    """One configuration estimated: the config itself, or a what-if change of it."""

    cfg: object
    counts: Counts
    probe: ProbeResult
    plan: BatchPlan
    memory: Memory
    timing: Timing
    checkpointing: bool
    weights_note: str
    replay_note: str


def prepare(cfg) -> Context:
    """Resolve the base (loader errors surface here), load the tokenizer, build the data."""
    from deltatune.models.device import check_training_precision, resolve_device
    from deltatune.models.loader import load_tokenizer

    device = resolve_device(cfg.model.device)
    check_training_precision(cfg.model.dtype, device)
    base = describe_base(cfg.model)
    tokenizer = load_tokenizer(base.path, cfg.model.trust_remote_code)
    dataset, notes = training_examples(cfg, tokenizer)
    baseline, how = process_baseline_bytes() if device.type == "cpu" else (0, "device memory: no process baseline")
    return Context(cfg, base, tokenizer, device, dataset, notes, baseline, how)


def load_dtype(cfg) -> torch.dtype:
    """The dtype the weights are stored in during training (deltatune.models.device policy)."""
    from deltatune.methods.registry import get_method
    from deltatune.models.device import DTYPES, storage_dtype

    return DTYPES[storage_dtype(cfg.model.dtype, get_method(cfg.method).trains_base_weights)]


def estimate_variant(ctx: Context, cfg, plan: BatchPlan | None = None) -> Variant:
    """The estimate of `cfg` (which may differ from ctx.cfg in its method or batch)."""
    plan = plan or plan_batches(cfg, ctx.dataset, ctx.notes)
    dtype = load_dtype(cfg)
    counts = meta_counts(ctx.base, cfg.method, dtype, ctx.tokenizer)
    probe = run_probe(ctx.base, cfg, ctx.tokenizer, plan.peak_examples, dtype, ctx.device)
    counts = counts or probe.counts(architecture(ctx.base.config)["layers"])
    return assemble(ctx, cfg, counts, probe, plan, bool(getattr(cfg.train, "gradient_checkpointing", False)))


def assemble(ctx: Context, cfg, counts: Counts, probe: ProbeResult, plan: BatchPlan, checkpointing: bool) -> Variant:
    """Memory and time from the measured parts, for `plan`'s batches (no new probe: the probe's
    per-cell and per-label figures scale to other batches)."""
    acts = activation_model(cfg, counts, probe, load_dtype(cfg))
    saved = acts.saved(plan.peak, checkpointing) + acts.head_transient(plan.peak)
    weights, weights_note = resident_weights(ctx.base, counts, load_dtype(cfg), ctx.device,
                                             get_method(cfg.method).releases_file_pages)
    replay = ctx.dataset.examples[plan.n_user:] if plan.n_replay else []
    answering = bool((ctx.dataset.stats or {}).get("replay_unanswered"))
    replay_extra, replay_note = replay_phase_bytes(cfg, ctx.base.config, counts, replay, acts.act_bytes, answering)
    memory = memory_estimate(baseline=ctx.baseline, weights=weights, trainable=counts.trainable, activations=saved,
                             device_type=ctx.device.type, grad_accum=plan.grad_accum, replay_extra=replay_extra)
    timing = step_timing(ctx, cfg, counts, probe, plan, checkpointing)
    return Variant(cfg, counts, probe, plan, memory, timing, checkpointing, weights_note, replay_note)


def activation_model(cfg, counts: Counts, probe: ProbeResult, dtype: torch.dtype) -> Activations:
    """The probe's saved bytes as per-cell (blocks) and per-label (the rest) figures."""
    return Activations(per_cell_per_block=probe.saved_block / max(probe.cells, 1),
                       per_label_rest=probe.saved_rest / max(probe.labelled, 1),
                       layers=counts.layers, hidden=counts.hidden, act_bytes=torch.finfo(dtype).bits // 8,
                       vocab=counts.vocab, chunk=getattr(cfg.train, "ce_chunk_tokens", None))


def step_timing(ctx: Context, cfg, counts: Counts, probe: ProbeResult, plan: BatchPlan, checkpointing: bool) -> Timing:
    """Seconds per optimiser step (module docstring) and the run's total."""
    flops = micro_batch_flops(counts, plan.mean, checkpointing)
    micro = flops.layers / probe.layer_rate + flops.head / probe.head_rate
    optimizer = counts.trainable * adamw_seconds_per_param(ctx.device, cfg.train.num_threads)
    step = plan.grad_accum * micro + optimizer
    steps = plan.budget.total_steps
    return Timing(step, plan.grad_accum * micro, optimizer, plan.grad_accum * flops.total, probe.layer_rate / 1e9,
                  probe.head_rate / 1e9, steps, steps * step / 60)


def estimate_run(cfg, memory_limit: int | None = None, label: str | None = None):
    """The `Estimate` of a run (peak memory, step time, the budget's steps and minutes); with
    `memory_limit` (bytes) and a peak above it, the changes that would fit, each estimated."""
    from deltatune.estimate.advice import suggestions
    from deltatune.estimate.report import Estimate

    ctx = prepare(cfg)
    main = estimate_variant(ctx, cfg)
    advice = suggestions(ctx, main, memory_limit) if memory_limit and main.memory.peak > memory_limit else []
    return Estimate.from_variant(ctx, main, advice, memory_limit, label)
