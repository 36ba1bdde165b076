"""Adapter folders on disk: write atomically, read back with the method config that made them.

Layout (one folder, e.g. RUN_DIR/adapter/):
  deltatune_adapter.json       {"format": "deltatune-adapter", "version": 1, "method": {...},
                               "base_model_name_or_path": ..., "weights": FILE}
  adapter_model.safetensors    `wrap` methods: keys `base_model.model.<module>.<param>`
  adapter_config.json          `wrap` methods with a PEFT twin (LoRA): PEFT's own config
  model.safetensors            `tensors` methods (full, freeze): trained parameters by name
A plain PEFT LoRA folder (no deltatune json) also reads. Only safetensors are ever loaded.
"""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from deltatune.errors import DeltatuneError
from deltatune.methods.registry import METHODS, MethodSpec, method_spec

DELTATUNE_JSON = "deltatune_adapter.json"
PEFT_JSON = "adapter_config.json"
WRAP_WEIGHTS = "adapter_model.safetensors"
TENSOR_WEIGHTS = "model.safetensors"
PEFT_PREFIX = "base_model.model."
_OURS = {DELTATUNE_JSON, PEFT_JSON, WRAP_WEIGHTS, TENSOR_WEIGHTS}


@dataclass
class AdapterFiles:
    """What an adapter folder holds, validated."""

    path: Path
    spec: MethodSpec
    method_cfg: BaseModel
    tensors: dict[str, torch.Tensor]  # wrap: keys without PEFT_PREFIX; tensors: parameter names
    base_model_path: str | None


def write_adapter_files(
    out_dir: str | Path,
    method_cfg: BaseModel,
    tensors: dict[str, torch.Tensor],
    base_model_path: str,
    peft_config: dict[str, Any] | None = None,
) -> Path:
    """Write the folder into a temp dir beside `out_dir`, then rename it into place; an
    existing adapter folder there is replaced, any other existing folder is an error."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or set(p.name for p in out.iterdir()) - _OURS):
        raise DeltatuneError(f"{out} exists and is not an adapter folder; pick an empty or new path")
    spec = method_spec(method_cfg)
    weights = WRAP_WEIGHTS if spec.kind == "wrap" else TENSOR_WEIGHTS
    if spec.kind == "wrap":
        tensors = {PEFT_PREFIX + k: v for k, v in tensors.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        save_file({k: v.detach().contiguous() for k, v in tensors.items()}, tmp / weights, metadata={"format": "pt"})
        meta = {
            "format": "deltatune-adapter",
            "version": 1,
            "method": method_cfg.model_dump(mode="json"),
            "base_model_name_or_path": base_model_path,
            "weights": weights,
        }
        (tmp / DELTATUNE_JSON).write_text(json.dumps(meta, indent=2) + "\n")
        if peft_config is not None:
            (tmp / PEFT_JSON).write_text(json.dumps(peft_config, indent=2) + "\n")
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def read_adapter_files(adapter_dir: str | Path) -> AdapterFiles:
    """Read and validate an adapter folder (ours, or a plain PEFT LoRA folder)."""
    path = Path(adapter_dir)
    if not path.is_dir():
        raise DeltatuneError(f"adapter folder not found: {path}")
    if (path / DELTATUNE_JSON).is_file():
        meta = _read_json(path / DELTATUNE_JSON)
        raw_cfg = meta.get("method")
        if not isinstance(raw_cfg, dict):
            raise DeltatuneError(f"{path / DELTATUNE_JSON}: no `method` mapping inside")
        spec = method_spec(raw_cfg)
        try:
            cfg = spec.config_cls.model_validate(raw_cfg)
        except ValidationError as err:
            raise DeltatuneError(f"{path / DELTATUNE_JSON}: bad method config: {err}") from None
        weights, base = meta.get("weights", WRAP_WEIGHTS), meta.get("base_model_name_or_path")
    elif (path / PEFT_JSON).is_file():
        raw = _read_json(path / PEFT_JSON)
        spec = next((s for s in METHODS.values() if s.peft_type and s.peft_type == raw.get("peft_type")), None)
        if spec is None or spec.from_peft is None:
            raise DeltatuneError(f"{path / PEFT_JSON}: peft_type {raw.get('peft_type')!r} is not supported")
        cfg = spec.from_peft(raw, str(path / PEFT_JSON))
        weights, base = WRAP_WEIGHTS, raw.get("base_model_name_or_path")
    else:
        raise DeltatuneError(f"{path} is not an adapter folder (no {DELTATUNE_JSON} or {PEFT_JSON})")
    tensors = _load_safetensors(path, weights)
    if spec.kind == "wrap":
        bad = [k for k in tensors if not k.startswith(PEFT_PREFIX)]
        if bad:
            raise DeltatuneError(f"{path / weights}: key {bad[0]!r} lacks the {PEFT_PREFIX!r} prefix")
        tensors = {k[len(PEFT_PREFIX):]: v for k, v in tensors.items()}
    return AdapterFiles(path, spec, cfg, tensors, base)


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
