"""Setup and wrap-up steps shared by the recipes (the loop is training/loop.py).

Each recipe reads top to bottom as: seed -> load model -> load data (before anything is
written) -> run dir -> [measure base] -> apply method -> train -> save adapter -> evaluate.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch

from deltatune.models.loader import resolve_model_path
from deltatune.training.checkpoint import latest_checkpoint
from deltatune.training.progress import say


HELDOUT_VAL = "val_heldout.jsonl"  # the validation rows carved from data.train, kept in the run dir


def training_summary(result, trainable: int, total: int) -> dict:
    """What every recipe's eval.json says about the loop: steps, why it stopped, the final val
    loss, the restored best step, resources, parameter counts and the resolved budget."""
    return {"steps": result.state.step, "stop_reason": result.stop_reason, "final_val_loss": result.val_loss,
            "restored_best_step": result.restored_step, "resources": result.resources,
            "parameters": {"trainable": trainable, "total": total}, "budget": result.budget.as_dict()}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup_process(cfg):
    """Torch's thread count, and this process's place in a torchrun launch (deltatune.training.
    distributed: world 1 when run directly). Returns the process group."""
    from deltatune.training import distributed

    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    return distributed.join(cfg.train, cfg.model.device)


def is_main_process() -> bool:
    """Rank 0 (or a single process): the one that measures, evaluates and writes reports."""
    from deltatune.training import distributed

    return distributed.current().is_main


def load_for_training(cfg):
    """(model, tokenizer) on `model.device`, stored as the precision policy says
    (deltatune.models.device): fp32 master weights when the method trains base weights."""
    from deltatune.methods.registry import get_method
    from deltatune.models.device import check_training_precision, resolve_device, storage_dtype
    from deltatune.models.loader import load_causal_lm

    device = resolve_device(cfg.model.device)
    check_training_precision(cfg.model.dtype, device)
    method = get_method(cfg.method)
    dtype = storage_dtype(cfg.model.dtype, method.trains_base_weights)
    from deltatune.models.runs import is_run_dir

    if method.load_base is not None and is_run_dir(cfg.model.name):
        from deltatune.errors import DeltatuneError

        raise DeltatuneError(f"model.name {cfg.model.name} is a run dir, which method.name={method.name!r} cannot "
                             f"load (it quantises the base as it loads): merge that run first (deltatune merge "
                             f"{cfg.model.name} --out DIR) and point model.name at DIR")
    if method.load_base is not None:  # a method may need its base loaded its own way (quantised)
        model, tokenizer = method.load_base(cfg.model, device=device, dtype=dtype, method_cfg=cfg.method)
    else:
        model, tokenizer = load_causal_lm(cfg.model, device=device, dtype=dtype)
    say(f"model on {device}, compute dtype {cfg.model.dtype}")
    return model, tokenizer


def measure_base(model, measure):
    """`measure()` of the base model, with the method already installed: switched off for the
    call, and the RNG state restored afterwards, so measuring or not leaves training's random
    stream (dropout, sampling) exactly as it was."""
    from deltatune.methods.core import switched_off

    with torch.random.fork_rng(), switched_off(model):
        return measure()


def evaluate_model(model, tokenizer, cfg, splits: dict[str, str]) -> dict:
    """{split: {metric: value}} from the eval runner (val loss, test accuracy, probe, KL)."""
    from deltatune.eval.runner import evaluate

    return evaluate(model, tokenizer, cfg.data, cfg.eval, splits)


def measure_before(model, tokenizer, cfg, splits: dict[str, str]) -> dict:
    """The base model's numbers (method switched off), from the cache when nothing they depend
    on changed (deltatune.eval.base_cache): the same every run, and minutes to compute."""
    from deltatune.eval.base_cache import base_eval_key, cached_base_eval
    from deltatune.methods.core import switched_off

    say("measuring the base model ...")
    with switched_off(model):
        key = base_eval_key(model, tokenizer, cfg.data, cfg.eval, splits)
    return cached_base_eval(key, lambda: measure_base(model, lambda: evaluate_model(model, tokenizer, cfg, splits)))


def describe_dataset(name: str, dataset) -> None:
    stats = getattr(dataset, "stats", {}) or {}
    extra = ", ".join(f"{k} {stats[k]}" for k in ("truncated", "dropped", "replay") if stats.get(k))
    say(f"{name}: {len(dataset)} examples" + (f" ({extra})" if extra else ""))


def resume_point(run_dir: Path, resume: bool) -> Path | None:
    """The checkpoint to continue from, or None (fresh start; said out loud on --resume)."""
    if not resume:
        return None
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        say(f"--resume: no checkpoint in {run_dir}/checkpoints, starting from step 0")
    return ckpt


def print_parameter_counts(model) -> tuple[int, int]:
    from deltatune.methods.core import count_parameters

    trainable, total = count_parameters(model)
    say(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / max(total, 1):.3f}%)")
    return trainable, total


def base_model_path(cfg) -> str:
    return resolve_model_path(cfg.model.name)


def read_before(run_dir: Path) -> dict | None:
    """Base-model numbers measured by an earlier (interrupted) start of this run."""
    path = Path(run_dir) / "eval.json"
    if path.is_file():
        return json.loads(path.read_text()).get("before")
    return None


def method_report(model) -> dict | None:
    """What the installed method says about its finished run (its `report` hook: e.g. AdaLoRA's
    final ranks per layer), or None."""
    from deltatune.methods.core import installed_method

    hook = installed_method(model)[2].hooks.report
    return hook() if hook is not None else None


def finish_report(run_dir: Path, before: dict | None, after: dict, extra: dict, model=None) -> None:
    """Write eval.json (with the method's own report when it has one), loss.png and report.html,
    print the before/after table and the run dir."""
    from deltatune.eval import report

    own = method_report(model) if model is not None else None
    if own is not None:
        extra = {**extra, "method_report": own}
        say(f"method report: {json.dumps(own)[:400]}")
    report.write_eval_json(run_dir / "eval.json", {"before": before, "after": after, **extra})
    try:
        report.plot_loss_curve(run_dir / "metrics.jsonl", run_dir / "loss.png")
    except Exception as err:  # a plot must never fail a finished run
        say(f"(loss plot skipped: {err})")
    write_run_page(run_dir)
    if after or before:
        print(report.comparison_table(before, after))
    print(f"run dir: {run_dir}")


def write_run_page(run_dir: Path) -> None:
    """RUN_DIR/report.html (deltatune.reports), after eval.json; a report must never fail a
    finished run, so a failure is a printed note."""
    try:
        from deltatune.reports import write_run_page as write_page

        say(f"report: {write_page(run_dir)}")
    except Exception as err:  # noqa: BLE001 - the run is done; `deltatune report RUN_DIR` retries
        say(f"(report.html skipped: {type(err).__name__}: {err}; rerun `deltatune report {run_dir}`)")
