"""The work-cutting training options (`train.packing`, `train.ce_chunk_tokens`,
`train.gradient_checkpointing`, `train.compile`): each gives the same loss and gradients as the
plain path and does less work or holds less memory. Off, nothing here runs.

    report = prepare_for_training(model, cfg.train, dtype=cfg.model.dtype)   # after the method is installed
    objective = objective_for(cfg.train, objective)    # the packed collation and the chunked loss
    log.write("speed", step=0, **report)              # e.g. compile_seconds

- packing (`deltatune.data.packing`): a micro-batch is one row of its examples' real tokens, with
  per-example position ids and attention run per example (`segment_attention`): the linear
  layers see no padding, attention costs sum(len_i^2). Refused for methods that change what the
  decoder layers see (prompt / P-tuning prepend virtual tokens, prefix / P-tuning v2 seed the
  KV cache): a packed row would need its virtual tokens per example.
- chunked cross-entropy (`deltatune.losses.lm.chunked_lm_loss`): the loss N labelled positions at
  a time, logits recomputed in backward; no (tokens x vocab) tensor for the whole batch.
- gradient checkpointing: transformers' per-layer activation checkpointing, non-reentrant (the
  layers' inputs need not require grad, so frozen embeddings are fine). Refused for methods
  that reach the layers through the KV cache (prefix, P-tuning v2): a checkpointed layer drops
  the cache, which would silently train without the prefix.
- compile: `torch.compile` of each decoder layer's forward (the names of parameters, hence
  checkpoints and adapters, do not change), compiled right away on a two-example warm-up batch
  so the compile time can be reported and a failure (no compiler, an untraceable method) falls
  back to the eager layers with a one-line message instead of stopping the run.
"""

from __future__ import annotations

import dataclasses
import time
from functools import partial

import torch

from deltatune.data.batching import collate
from deltatune.data.labels import IGNORE_INDEX
from deltatune.data.packing import collate_packed
from deltatune.errors import DeltatuneError
from deltatune.losses.lm import model_lm_loss
from deltatune.models.device import autocast_for, model_device
from deltatune.training.progress import say
from deltatune.training.segment_attention import use_segment_attention

__all__ = ["collate_for", "loss_fn_for", "objective_for", "prepare_for_training", "probe_decoder"]


def prepare_for_training(model, train_cfg, dtype: str = "float32") -> dict:
    """Apply `train_cfg`'s model-side options to `model` (once, after the method is installed and
    prepared, before the optimiser); returns what was done, for metrics.jsonl."""
    report: dict = {}
    if train_cfg.packing or train_cfg.gradient_checkpointing:
        seen = probe_decoder(model)
        if train_cfg.packing:
            _check_packing(model, seen)
            report["attention"] = f"per-example segments (was {use_segment_attention(model)})"
        if train_cfg.gradient_checkpointing:
            _check_checkpointing(model, seen)
            enable_gradient_checkpointing(model)
            report["gradient_checkpointing"] = True
    if train_cfg.compile:
        report.update(compile_decoder_layers(model, train_cfg, dtype))
    return report


def collate_for(train_cfg, objective_collate=collate):
    """The objective's collation, or the packed one under `train.packing` (LM batches only)."""
    if not train_cfg.packing:
        return objective_collate
    if objective_collate is not collate:
        raise DeltatuneError(
            f"train.packing packs language-modelling examples (recipes sft / pt); this recipe builds its batches "
            f"with {getattr(objective_collate, '__name__', objective_collate)!r}: remove train.packing")
    return collate_packed


def loss_fn_for(train_cfg, loss_fn=model_lm_loss):
    """The objective's loss, or the LM loss with `train.ce_chunk_tokens` / `train.shared_prefix`
    (the shared prefix runs a KV cache, which gradient checkpointing drops: off with it)."""
    shared = train_cfg.shared_prefix and not train_cfg.gradient_checkpointing
    if train_cfg.ce_chunk_tokens is None and not shared:
        return loss_fn
    if loss_fn is not model_lm_loss:
        if train_cfg.ce_chunk_tokens is None:
            return loss_fn  # shared_prefix is a default: other objectives run their own forward
        raise DeltatuneError(
            f"train.ce_chunk_tokens chunks the language-modelling loss (recipes sft / pt); this recipe's loss is "
            f"{getattr(loss_fn, '__name__', loss_fn)!r}: remove train.ce_chunk_tokens")
    return partial(model_lm_loss, ce_chunk_tokens=train_cfg.ce_chunk_tokens, shared_prefix=shared)


def objective_for(train_cfg, objective):
    """`objective` (deltatune.training.objective.Objective) with `collate_for` / `loss_fn_for`
    applied; the same object when both options are off."""
    if not train_cfg.packing and train_cfg.ce_chunk_tokens is None and not train_cfg.shared_prefix:
        return objective
    return dataclasses.replace(objective, collate=collate_for(train_cfg, objective.collate),
                               loss_fn=loss_fn_for(train_cfg, objective.loss_fn))


# ---------------------------------------------------------------------------------------------
# What the method does to the decoder's inputs


@torch.no_grad()
def probe_decoder(model, tokens: int = 4) -> dict:
    """What the decoder's first layer receives for a (1, `tokens`) input, with the method
    attached: {"tokens": how many positions, "cache": whether a KV cache reaches it}. A method
    that prepends virtual tokens shows more tokens; one that seeds the KV cache shows a cache."""
    from deltatune.forward import decoder_hidden

    layer = decoder_layers(model, "train.packing / train.gradient_checkpointing")[0]
    seen: dict = {}

    def record(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        seen["tokens"] = int(hidden.shape[1])
        seen["cache"] = (kwargs.get("cache") if "cache" in kwargs else kwargs.get("past_key_values")) is not None

    ids = torch.zeros((1, tokens), dtype=torch.long, device=model_device(model))
    handle = layer.register_forward_pre_hook(record, with_kwargs=True)
    was_training = model.training
    model.eval()
    try:
        decoder_hidden(model, ids, torch.ones_like(ids))
    finally:
        handle.remove()
        model.train(was_training)
    seen["tokens_in"] = tokens
    return seen


def decoder_layers(model, key: str) -> list:
    """The decoder's blocks (`model.get_decoder().layers`, as in Llama, Qwen, Mistral, ...)."""
    layers = getattr(model.get_decoder(), "layers", None)
    if not layers:
        raise DeltatuneError(f"{key}: {type(model).__name__}'s decoder has no `layers` list of blocks to work on; "
                             f"remove {key}")
    return list(layers)


def _method_name(model) -> str:
    from deltatune.methods.core import installed_method

    try:
        return installed_method(model)[0].name
    except DeltatuneError:
        return "none"


def _check_packing(model, seen: dict) -> None:
    extra = seen["tokens"] - seen["tokens_in"]
    if extra or seen["cache"]:
        what = (f"adds {extra} virtual tokens to every row" if extra
                else "feeds a prefix to the layers through the KV cache")
        raise DeltatuneError(
            f"train.packing: the installed method ({_method_name(model)}) {what}, which a packed row (several "
            f"examples in one row) would share across its examples; set train.packing=false for this method")


def _check_checkpointing(model, seen: dict) -> None:
    if seen["cache"]:
        raise DeltatuneError(
            f"train.gradient_checkpointing: the installed method ({_method_name(model)}) feeds its prefix to the "
            f"layers through the KV cache, which transformers' checkpointed layers drop (the run would train "
            f"without the prefix); set train.gradient_checkpointing=false for this method")


# ---------------------------------------------------------------------------------------------
# Gradient checkpointing and compile


def enable_gradient_checkpointing(model) -> None:
    """transformers' per-layer activation checkpointing with `use_reentrant=False`: recomputed in
    backward, correct whether or not the layers' inputs require grad (frozen embeddings)."""
    kwargs = {"use_reentrant": False}
    try:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    except ValueError as err:
        raise DeltatuneError(f"train.gradient_checkpointing: {err}; set train.gradient_checkpointing=false") from None


def compile_decoder_layers(model, train_cfg, dtype: str = "float32") -> dict:
    """torch.compile each decoder layer's forward and compile it now on a warm-up batch.
    Returns {"compile_seconds": ...}, or {"compile": "failed", "compile_error": ...} after putting
    the eager layers back (the run goes on eagerly)."""
    layers = decoder_layers(model, "train.compile")
    start = time.perf_counter()
    try:
        for layer in layers:
            if "forward" not in vars(layer):  # not compiled yet (an instance attribute shadows the class's forward)
                layer.forward = torch.compile(layer.forward, dynamic=True)
        _warm_up(model, train_cfg, dtype)
    except Exception as err:  # noqa: BLE001 - any compiler failure means: train eagerly
        for layer in layers:
            vars(layer).pop("forward", None)
        torch.compiler.reset()
        reason = (str(err).strip().splitlines() or [""])[0][:200]
        say(f"train.compile: torch.compile failed ({type(err).__name__}: {reason}); training runs eagerly")
        return {"compile": "failed", "compile_error": f"{type(err).__name__}: {reason}"}
    seconds = time.perf_counter() - start
    say(f"train.compile: decoder layers compiled in {seconds:.1f} s")
    return {"compile_seconds": round(seconds, 3)}


def _warm_up(model, train_cfg, dtype: str) -> None:
    """One forward + backward of a two-example batch through the training path (packing and
    chunked loss as configured) so compilation happens now; the gradients it makes and the random
    numbers it draws are put back, so the run is the one it would have been."""
    device = model_device(model)
    vocab = model.get_input_embeddings().num_embeddings
    gen = torch.Generator().manual_seed(0)
    examples = []
    for n in (12, 7):
        ids = torch.randint(0, vocab, (n,), generator=gen).tolist()
        examples.append({"input_ids": ids, "labels": [IGNORE_INDEX] * (n // 2) + ids[n // 2:]})
    batch = collate_for(train_cfg)(examples, 0)
    batch = {k: v.to(device) for k, v in batch.items()}
    grads = {p: p.grad for p in model.parameters()}
    was_training = model.training
    model.train()
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            with autocast_for(dtype, device):
                loss, _ = loss_fn_for(train_cfg)(model, batch)
            if loss.requires_grad:
                loss.backward()
    finally:
        for p, grad in grads.items():
            p.grad = grad
        model.train(was_training)
