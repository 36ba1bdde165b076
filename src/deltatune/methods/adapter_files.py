"""Adapter folders on disk: write atomically, read back with the method config that made them.

Layout (one folder, e.g. RUN_DIR/adapter/):
  deltatune_adapter.json       {"format": "deltatune-adapter", "version": 2, "method": {...},
                               "base_model_name_or_path": ..., "weights": FILE, "keys": "peft"|"model"}
  adapter_model.safetensors    methods with a peft twin (LoRA, IA3, prompt tuning): peft's
  adapter_config.json            own two files, keys as peft stores them (`PeftTwin.to_key`)
  model.safetensors            other methods (full, freeze): the method's state by model name
A plain peft folder (no deltatune json) of a type we have a twin for also reads. Only
safetensors are ever loaded. Which layout a method gets is decided by its registry row alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from deltatune.atomic import atomic_dir
from deltatune.errors import DeltatuneError
from deltatune.methods.protocol import Method
from deltatune.methods.registry import METHODS, get_method

DELTATUNE_JSON = "deltatune_adapter.json"
PEFT_JSON = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
MODEL_WEIGHTS = "model.safetensors"
_OURS = {DELTATUNE_JSON, PEFT_JSON, PEFT_WEIGHTS, MODEL_WEIGHTS}


@dataclass
class AdapterFiles:
    """What an adapter folder holds, validated. `tensors` are keyed by model names."""

    path: Path
    method: Method
    method_cfg: BaseModel
    tensors: dict[str, torch.Tensor]
    base_model_path: str | None


def write_adapter_files(
    out_dir: str | Path,
    method_cfg: BaseModel,
    state: dict[str, torch.Tensor],
    base_model_path: str,
    peft_config: dict[str, Any] | None = None,
) -> Path:
    """Write the folder into a temp dir beside `out_dir`, then rename it into place; an
    existing adapter folder there is replaced, any other existing folder is an error.
    With `peft_config` (the method's twin config) the weights go in peft's layout."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or set(p.name for p in out.iterdir()) - _OURS):
        raise DeltatuneError(f"{out} exists and is not an adapter folder; pick an empty or new path")
    method = get_method(method_cfg)
    in_peft_layout = peft_config is not None and method.peft is not None
    weights = PEFT_WEIGHTS if in_peft_layout else MODEL_WEIGHTS
    to_key = method.peft.to_key if in_peft_layout else (lambda name: name)
    tensors = {to_key(name): t.detach().contiguous().cpu() for name, t in state.items()}
    with atomic_dir(out, replace=True) as tmp:
        save_file(tensors, tmp / weights, metadata={"format": "pt"})
        meta = {
            "format": "deltatune-adapter",
            "version": 2,
            "method": method_cfg.model_dump(mode="json"),
            "base_model_name_or_path": base_model_path,
            "weights": weights,
            "keys": "peft" if in_peft_layout else "model",
        }
        (tmp / DELTATUNE_JSON).write_text(json.dumps(meta, indent=2) + "\n")
        if in_peft_layout:
            (tmp / PEFT_JSON).write_text(json.dumps(peft_config, indent=2) + "\n")
    return out


def read_adapter_files(adapter_dir: str | Path) -> AdapterFiles:
    """Read and validate an adapter folder (ours, or a plain peft folder we have a twin for)."""
    path = Path(adapter_dir)
    if not path.is_dir():
        raise DeltatuneError(f"adapter folder not found: {path}")
    if (path / DELTATUNE_JSON).is_file():
        method, cfg, weights, keys, base = _read_ours(path)
    elif (path / PEFT_JSON).is_file():
        method, cfg, base = _read_peft(path)
        weights, keys = PEFT_WEIGHTS, "peft"
    else:
        raise DeltatuneError(f"{path} is not an adapter folder (no {DELTATUNE_JSON} or {PEFT_JSON})")
    raw = _load_safetensors(path, weights)
    if keys == "peft":
        try:
            tensors = {method.peft.from_key(k): v for k, v in raw.items()}
        except DeltatuneError as err:
            raise DeltatuneError(f"{path / weights}: {err}") from None
    else:
        tensors = raw
    return AdapterFiles(path, method, cfg, tensors, base)


def _read_ours(path: Path):
    meta = _read_json(path / DELTATUNE_JSON)
    raw_cfg = meta.get("method")
    if not isinstance(raw_cfg, dict):
        raise DeltatuneError(f"{path / DELTATUNE_JSON}: no `method` mapping inside")
    method = get_method(raw_cfg)
    try:
        cfg = method.config_cls.model_validate(raw_cfg)
    except ValidationError as err:
        raise DeltatuneError(f"{path / DELTATUNE_JSON}: bad method config: {err}") from None
    weights = meta.get("weights", PEFT_WEIGHTS)
    # version 1 folders had no "keys": their adapter_model.safetensors was in peft's layout
    keys = meta.get("keys", "peft" if weights == PEFT_WEIGHTS else "model")
    if keys == "peft" and method.peft is None:
        raise DeltatuneError(f"{path / DELTATUNE_JSON}: method {method.name!r} has no peft layout")
    return method, cfg, weights, keys, meta.get("base_model_name_or_path")


def _read_peft(path: Path):
    raw = _read_json(path / PEFT_JSON)
    method = next((m for m in METHODS.values()
                   if m.peft and m.peft.peft_type == raw.get("peft_type") and m.peft.accepts(raw)), None)
    if method is None:
        known = sorted(m.peft.peft_type for m in METHODS.values() if m.peft)
        raise DeltatuneError(f"{path / PEFT_JSON}: peft_type {raw.get('peft_type')!r} is not supported "
                             f"(supported: {', '.join(known)})")
    return method, method.peft.from_config(raw, str(path / PEFT_JSON)), raw.get("base_model_name_or_path")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DeltatuneError(f"{path}: cannot read JSON: {err}") from None
    if not isinstance(data, dict):
        raise DeltatuneError(f"{path}: expected a JSON object")
    return data


def _load_safetensors(folder: Path, name: str) -> dict[str, torch.Tensor]:
    if not name.endswith(".safetensors") or "/" in name or "\\" in name:
        raise DeltatuneError(f"{folder}: weights file {name!r} refused: only a local .safetensors file loads")
    file = folder / name
    if not file.is_file():
        pickled = [p.name for p in folder.glob("*.bin")]
        hint = f" ({', '.join(pickled)} found: pickle files are never loaded)" if pickled else ""
        raise DeltatuneError(f"{file} not found{hint}")
    try:
        return load_file(file)
    except (SafetensorError, OSError) as err:
        raise DeltatuneError(f"{file}: not a readable safetensors file: {err}") from None
