"""Turn a training run into a deployable artefact, verified before it is left on disk.

    deltatune merge RUN_DIR --out DIR                  # merge_run: plain HF folder
    deltatune export RUN_DIR --format peft --out DIR   # export_peft: the adapter alone (peft layout)

`merge_run` loads the base, applies the run's adapter, folds it in (`merge_and_unload`) and
writes safetensors weights, config, generation config and the tokenizer with its chat
template: bare `transformers.AutoModelForCausalLM.from_pretrained(DIR)` loads it. A full or
freeze run is already a whole model: its trained tensors are loaded into the base and the
result written the same way. `export_peft` writes `adapter_config.json` +
`adapter_model.safetensors`, which `peft.PeftModel.from_pretrained(base, DIR)` loads.

Both write into a temporary folder beside DIR, reload what they wrote with bare transformers
(plus peft for the adapter, when installed), compare logits and greedy continuations against
the in-memory adapted model on prompts from the run's own validation data
(`deltatune.export.verify`), and only then rename the folder into place. A mismatch raises
DeltatuneError and removes the temporary folder: no half-written or wrong export remains.
"""

from __future__ import annotations

import json
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from deltatune.atomic import atomic_dir
from deltatune.errors import DeltatuneError
from deltatune.export.verify import compare, fingerprint, plain_logits, verification_prompts

REPORT_FILE = "deltatune_export.json"


@dataclass
class ExportReport:
    out_dir: Path
    kind: str  # "merged" | "peft"
    method: str
    verification: dict
    seconds: float


# ---------------------------------------------------------------------------------------------
# Loading a run


def _run_parts(run_dir: str | Path):
    """(config, adapter dir, method) of a finished run; clear errors otherwise."""
    from deltatune.config import load_run_config
    from deltatune.methods.registry import get_method

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    if cfg.recipe == "cls":
        raise DeltatuneError(f"{run_dir} is a classifier (recipe: cls): its head is not part of a causal-LM "
                             f"export; serve it with `deltatune serve --classifier NAME={run_dir}`")
    adapter_dir = run_dir / "adapter"
    if not adapter_dir.is_dir() or not any(adapter_dir.iterdir()):
        raise DeltatuneError(f"{run_dir} has no trained adapter ({adapter_dir} missing or empty): "
                             f"finish training first (deltatune train {run_dir}/config.yaml --resume)")
    return cfg, adapter_dir, get_method(cfg.method)


def load_base_for_merge(cfg):
    """(model, tokenizer): the base weights an adapter's update is folded into — loaded the way
    the method trained against it (its registry row's `load_base`, else the plain loader), on
    the CPU: merging is cheap and it is verified against a CPU reload."""
    from deltatune.methods.registry import get_method
    from deltatune.models.loader import load_causal_lm

    method = get_method(cfg.method)
    if method.load_base is not None:
        return method.load_base(cfg.model, device="cpu", method_cfg=cfg.method)
    return load_causal_lm(cfg.model, device="cpu")


def _adapted_model(cfg, adapter_dir: Path):
    from deltatune.methods.core import load_adapter

    model, tokenizer = load_base_for_merge(cfg)
    load_adapter(model, adapter_dir)
    model.requires_grad_(False)
    return model.eval(), tokenizer


# ---------------------------------------------------------------------------------------------
# Writing atomically


@contextmanager
def staging(out_dir: str | Path, overwrite: bool = False):
    """Yield a temp folder beside `out_dir`; on clean exit it replaces `out_dir`, on any
    exception it is deleted (and an existing `out_dir` is left untouched)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DeltatuneError(f"--out {out} exists and is a file")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DeltatuneError(f"--out {out} exists and is not empty; pick a new folder or pass --force")
    # an empty existing folder is replaced too: there is nothing in it to lose
    with atomic_dir(out, replace=out.is_dir()) as tmp:
        yield tmp


def _bare_load(folder: Path, dtype: torch.dtype):
    """Load a model folder with nothing but transformers (what a user's script would do)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, use_safetensors=True,
                                                trust_remote_code=False).eval()


def _write_report(folder: Path, report: ExportReport, run_dir: Path) -> None:
    data = {"source_run": str(Path(run_dir).resolve()), "kind": report.kind, "method": report.method,
            "verification": report.verification, "seconds": round(report.seconds, 2)}
    (folder / REPORT_FILE).write_text(json.dumps(data, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# The two commands


def merge_run(run_dir: str | Path, out_dir: str | Path, *, overwrite: bool = False,
              prompts: int = 4, new_tokens: int = 12) -> ExportReport:
    """Write RUN_DIR's model (adapter folded into the base) as a plain, verified HF folder."""
    from deltatune.methods.core import merge_and_unload

    start = time.perf_counter()
    cfg, adapter_dir, method = _run_parts(run_dir)
    if not method.mergeable:
        raise DeltatuneError(f"method {method.name!r} cannot be merged into the base; "
                             f"serve it unmerged (deltatune serve --adapter NAME={run_dir})")
    model, tokenizer = _adapted_model(cfg, adapter_dir)
    dtype = next(model.parameters()).dtype
    prompt_ids, source = verification_prompts(cfg, tokenizer, prompts)
    reference = fingerprint(model, prompt_ids, new_tokens)  # the unmerged model: ground truth
    merge_and_unload(model)
    with staging(out_dir, overwrite) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)  # carries the chat template
        del model  # one model in memory at a time
        reloaded = _bare_load(tmp, dtype)
        result = compare(reference, fingerprint(reloaded, prompt_ids, new_tokens, run=plain_logits), dtype, source)
        result.raise_if_failed(f"the merged model for {run_dir}")
        report = ExportReport(Path(out_dir), "merged", method.name, result.as_dict(), time.perf_counter() - start)
        _write_report(tmp, report, Path(run_dir))
    return report


def export_peft(run_dir: str | Path, out_dir: str | Path, *, overwrite: bool = False,
                prompts: int = 4, new_tokens: int = 12) -> ExportReport:
    """Write RUN_DIR's adapter alone in peft's layout (methods with a peft twin), verified by loading it back in peft."""
    from deltatune.methods.adapter_files import PEFT_JSON, PEFT_WEIGHTS

    start = time.perf_counter()
    cfg, adapter_dir, method = _run_parts(run_dir)
    if method.peft is None or not (adapter_dir / PEFT_JSON).is_file():
        raise DeltatuneError(
            f"--format peft exports methods that HF peft also has; this run used method {method.name!r}, "
            f"which has no peft layout. Use `deltatune merge {run_dir} --out DIR` for a whole model."
        )
    model, tokenizer = _adapted_model(cfg, adapter_dir)
    dtype = next(model.parameters()).dtype
    prompt_ids, source = verification_prompts(cfg, tokenizer, prompts)
    reference = fingerprint(model, prompt_ids, new_tokens)
    del model
    with staging(out_dir, overwrite) as tmp:
        for name in (PEFT_JSON, PEFT_WEIGHTS):
            shutil.copy2(adapter_dir / name, tmp / name)
        loaded, loader = _load_peft_export(tmp, cfg, dtype)
        result = compare(reference, fingerprint(loaded, prompt_ids, new_tokens, run=plain_logits), dtype, source)
        result.raise_if_failed(f"the PEFT export of {run_dir} (loaded with {loader})")
        verification = {**result.as_dict(), "loaded_with": loader}
        report = ExportReport(Path(out_dir), "peft", method.name, verification, time.perf_counter() - start)
        _write_report(tmp, report, Path(run_dir))
    return report


def _load_peft_export(folder: Path, cfg, dtype: torch.dtype):
    """(model, how): the base by bare transformers — or, for a method with its own base loader
    (a 4-bit QLoRA base, which transformers' BitsAndBytesConfig loads bit for bit the same), by
    that loader — with the exported adapter applied by HF peft when it is installed (the real
    consumer), else by our own loader."""
    from deltatune.methods.registry import get_method
    from deltatune.models.loader import resolve_model_path

    if get_method(cfg.method).load_base is not None:
        base = load_base_for_merge(cfg)[0]
    else:
        base = _bare_load(Path(resolve_model_path(cfg.model.name)), dtype)
    try:
        from peft import PeftModel
    except ImportError:
        from deltatune.methods.core import load_adapter

        load_adapter(base, folder)
        return base.eval(), "deltatune (peft not installed)"
    return PeftModel.from_pretrained(base, folder).eval(), "peft"
