"""The model-shaped probe: the run's method on two shallow real copies of the model (2 and 8
decoder layers, random weights, the real hidden sizes and vocabulary), one forward + backward of
the run's peak micro-batch through the run's own loss. Cached (`estimate.calibrate.cached`).

    result = run_probe(base, cfg, tokenizer, plan.peak_examples, load_dtype, device)
    result.saved_block, result.saved_rest   # bytes autograd keeps for backward: per block, the rest
    result.layer_rate, result.head_rate     # effective FLOP/s of the blocks and of the rest

What it measures, and why this way:
- saved activations: every tensor autograd stores for backward is seen through
  `torch.autograd.graph.saved_tensors_hooks`, counted once per storage, parameters and buffers
  left out (they are weights). This is exact for the code that will run — the method's wrappers
  (LoRA's dropout copies of each input, DoRA's norms, QLoRA's dequantised matmuls), the
  attention kernel transformers picks, the loss's log-softmax over labelled positions and
  replay's teacher targets — with no per-method formula. The two depths separate the part of a
  block from the rest: per block = (s8 - s2) / 6, rest = s2 - 2 x per block; the model's is
  rest + L x per block (linear in depth by construction).
- time: forward + backward of both depths (best of two, after a warm-up), with the run's thread
  count, divided into FLOPs (`estimate.flops`): effective FLOP/s of a block and of the rest, at
  the model's own shapes, elementwise work included. The step time scales these by FLOPs.
- counts: `estimate.model_info.count_model` on both depths, extrapolated, for methods that
  cannot be installed on the `meta` device (QLoRA, FISH Mask).

A batch wider than MAX_PROBE_CELLS token cells is probed on its longest rows only: the blocks'
saved bytes per token cell and the rest's per labelled position carry over to any batch (each
row's activations are its own). Gradient checkpointing is not switched on in the
probe: its saving is computed from the measured block (`estimate.memory`).
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import time

import torch

from deltatune.estimate.batches import batch_stats
from deltatune.estimate.calibrate import cached, code_fingerprint, machine_key, thread_count
from deltatune.estimate.flops import micro_batch_flops
from deltatune.estimate.model_info import (Counts, build_model, count_model, extrapolate, quiet, tensor_ids,
                                           with_layers)

# Why 2 and 8, not 1 and 3: a block's time grows with depth until the saved activations and
# gradients no longer fit the processor's caches. Measured on SmolLM2 full fine-tuning (2 CPU
# threads, seconds per block): 0.055 from 1 to 3 layers, 0.092 from 3 to 6, 0.101 from 12 to 30;
# with (1, 3) the estimate read 0.64x the measured step, with (2, 8) 1.02x.
PROBE_LAYERS = (2, 8)
MAX_PROBE_CELLS = 8192
TIMED_REPEATS = 2


@dataclasses.dataclass
class ProbeResult:
    saved_rest: float  # bytes saved for backward outside the blocks, at the probed rows
    saved_block: float  # bytes saved per block, at the probed rows
    cells: float  # token cells of the probed rows (the blocks' part grows with these)
    labelled: float  # labelled positions of the probed rows (the rest's part grows with these)
    layer_rate: float  # effective FLOP/s of the blocks (forward + backward)
    head_rate: float  # effective FLOP/s of the rest
    small: Counts  # the shallow copies' counts (for extrapolation)
    large: Counts
    cached: bool = False

    def counts(self, layers: int) -> Counts:
        return extrapolate(self.small, self.large, layers)


def run_probe(base, cfg, tokenizer, examples: list[dict], load_dtype: torch.dtype, device: torch.device) -> ProbeResult:
    """The probe of `cfg.method` at the micro-batch `examples` (module docstring), cached."""
    rows = _probe_rows(examples)
    key = {"probe": 2, "machine": machine_key(device.type, cfg.train.num_threads), "code": code_fingerprint(),
           "model_config": _sha(base.config.to_dict()), "method": cfg.method.model_dump(mode="json"),
           "dtype": cfg.model.dtype, "load_dtype": str(load_dtype), "batch": _batch_key(rows),
           "train": {k: getattr(cfg.train, k, None) for k in ("packing", "ce_chunk_tokens")}}
    fresh = {}

    def measure() -> dict:
        fresh["yes"] = True
        devices = [device] if device.type == "cuda" else []
        with thread_count(cfg.train.num_threads), torch.random.fork_rng(devices=devices):
            return _measure(base, cfg, tokenizer, rows, load_dtype, device)

    value = cached("probe", key, measure)
    small, large = Counts(**value["counts"][0]), Counts(**value["counts"][1])
    return ProbeResult(value["saved_rest"], value["saved_block"], value["cells"], value["labelled"],
                       value["layer_rate"], value["head_rate"], small, large, cached=not fresh)


def _probe_rows(examples: list[dict]) -> list[dict]:
    """The longest rows of the batch whose padded cells fit MAX_PROBE_CELLS (at least one)."""
    ordered = sorted(examples, key=lambda ex: -len(ex["input_ids"]))
    width = len(ordered[0]["input_ids"])
    keep = max(1, min(len(ordered), MAX_PROBE_CELLS // max(width, 1)))
    return ordered[:keep]


def _measure(base, cfg, tokenizer, rows, load_dtype, device) -> dict:
    collate_fn, loss_fn = training_path(cfg.train)
    lengths = [len(ex["input_ids"]) for ex in rows]
    labels = [sum(1 for label in ex["labels"][1:] if label != -100) for ex in rows]
    stats = batch_stats(list(range(len(rows))), lengths, labels, bool(getattr(cfg.train, "packing", False)))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batch = {k: v.to(device) for k, v in collate_fn(rows, pad_id).items()}
    models, counts, saved = [], [], []
    for layers in PROBE_LAYERS:
        model, count = _shallow_model(base, cfg, tokenizer, layers, load_dtype, device)
        models.append(model)
        counts.append(count)
        saved.append(saved_for_backward(model, batch, loss_fn, cfg.model.dtype))
    seconds = [float("inf")] * len(models)
    for _ in range(TIMED_REPEATS + 1):  # alternating, so a busy moment hits both depths alike
        for i, model in enumerate(models):
            seconds[i] = min(seconds[i], timed_step(model, batch, loss_fn, cfg.model.dtype))
    flops = [micro_batch_flops(c, stats) for c in counts]
    span = PROBE_LAYERS[1] - PROBE_LAYERS[0]
    block_seconds = (seconds[1] - seconds[0]) / span
    block_flops = (flops[1].layers - flops[0].layers) / span
    rest_seconds = seconds[0] - PROBE_LAYERS[0] * block_seconds
    overall = flops[1].total / seconds[1]
    # a noisy machine can make the difference meaningless: fall back to one overall rate
    layer_rate = block_flops / block_seconds if block_seconds > 0.05 * seconds[1] else overall
    head_rate = flops[0].head / rest_seconds if rest_seconds > 0.05 * seconds[0] and flops[0].head else overall
    saved_block = (saved[1] - saved[0]) / span
    del models
    gc.collect()
    return {"saved_rest": saved[0] - PROBE_LAYERS[0] * saved_block, "saved_block": saved_block,
            "cells": stats.cells, "labelled": stats.labelled, "layer_rate": layer_rate, "head_rate": head_rate,
            "seconds": seconds, "counts": [c.as_dict() for c in counts]}


def training_path(train_cfg):
    """(collate, loss_fn) the run trains with: the packed collation and the chunked loss when
    `train.packing` / `train.ce_chunk_tokens` say so (deltatune.training.speed), else the plain ones."""
    from deltatune.data import collate
    from deltatune.losses.lm import model_lm_loss

    try:
        from deltatune.training import speed
    except ImportError:
        return collate, model_lm_loss
    return speed.collate_for(train_cfg), speed.loss_fn_for(train_cfg)


def _shallow_model(base, cfg, tokenizer, layers: int, load_dtype, device):
    """A `layers`-deep copy of the model with fresh weights, the method installed, in train mode."""
    from deltatune.methods.core import apply_method

    torch.manual_seed(0)
    model = build_model(with_layers(base.config, layers), load_dtype, device, base.trust_remote_code)
    ids = tensor_ids(model)
    with quiet():
        apply_method(model, cfg.method, tokenizer=tokenizer)
        _prepare_like_training(model, cfg.train, cfg.model.dtype)
    model.train()
    return model, count_model(model, ids, source="probe")


def _prepare_like_training(model, train_cfg, dtype: str) -> None:
    """The model-side work-cutting options the run applies, except checkpointing and compile
    (module docstring): packing's per-example attention."""
    try:
        from deltatune.training import speed
    except ImportError:
        return
    off = {k: False for k in ("gradient_checkpointing", "compile") if k in type(train_cfg).model_fields}
    speed.prepare_for_training(model, train_cfg.model_copy(update=off), dtype=dtype)


def saved_for_backward(model, batch: dict, loss_fn, dtype: str) -> int:
    """Bytes autograd keeps for backward in one forward of `loss_fn(model, batch)`: each storage
    once, the model's parameters and buffers excluded."""
    from deltatune.models.device import autocast_for, model_device

    own = {t.untyped_storage().data_ptr() for t in list(model.parameters()) + list(model.buffers())}
    seen: dict[int, int] = {}

    def pack(tensor):
        try:
            storage = tensor.untyped_storage()
        except (RuntimeError, NotImplementedError):  # a tensor without plain storage (nested, sparse)
            return tensor
        ptr = storage.data_ptr()
        if ptr and ptr not in own:
            seen[ptr] = max(seen.get(ptr, 0), storage.nbytes())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        with autocast_for(dtype, model_device(model)):
            loss, _ = loss_fn(model, batch)
    loss.backward()  # frees the graph
    model.zero_grad(set_to_none=True)
    return sum(seen.values())


def timed_step(model, batch: dict, loss_fn, dtype: str) -> float:
    """Seconds of one forward + backward (the optimiser is timed apart: calibrate.adamw_*)."""
    from deltatune.models.device import autocast_for, model_device

    device = model_device(model)
    _sync(device)
    start = time.perf_counter()
    with autocast_for(dtype, device):
        loss, _ = loss_fn(model, batch)
    loss.backward()
    _sync(device)
    seconds = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return seconds


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batch_key(rows: list[dict]) -> dict:
    """What the probe's numbers depend on in the batch: lengths, label masks, extras."""
    digest = hashlib.sha256()
    for ex in rows:
        digest.update(json.dumps([len(ex["input_ids"]), [int(label != -100) for label in ex["labels"]]]).encode())
    teacher_k = max((len(t) for ex in rows for t in ex.get("teacher_ids") or [] if t), default=0)
    return {"rows": len(rows), "masks": digest.hexdigest()[:24], "teacher_k": teacher_k,
            "weights": any("loss_weight" in ex for ex in rows)}


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
