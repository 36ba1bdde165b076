"""Resumable training state, written atomically: a checkpoint is complete or it does not exist.

    save_checkpoint(run_dir, TrainState(step=30, ...), installed, optimizer, scheduler, keep=2)
    path = latest_checkpoint(run_dir)          # RUN_DIR/checkpoints/step-30, or None
    state = load_checkpoint(path, installed, optimizer, scheduler)   # restores RNG too

`installed` is the method on the model (`deltatune.methods.protocol.Installed`): its `state()`
— trainable tensors *and* the method's buffers (masks, importance scores, rank budgets) — is
what changes during training, so it is all a checkpoint needs besides optimiser and RNG.

Layout of `RUN_DIR/checkpoints/step-N/`:
    trainable.safetensors   the method's state (trainable tensors + buffers), by model name
    optimizer.pt            AdamW state;  scheduler.pt  LambdaLR state
    rng.pt                  torch CPU (+ CUDA) generator states
    state.json              step, data position (epoch, batch_index), best val loss,
                            early-stop counter, python and numpy RNG states

Atomicity (`deltatune.atomic.atomic_dir`): everything is written into
`checkpoints/.tmp-step-N/`, fsynced, then renamed to `step-N`. A crash mid-save leaves only a
`.tmp-*` folder, which `latest_checkpoint` ignores and the next save removes.

Best weights (`train.restore_best`): each time the val loss improves, the method's state
go to `checkpoints/best-step-N/` (trainable.safetensors + best.json), written the same atomic
way; older best-* folders are then removed. `load_best` puts them back at the end of training.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from deltatune.atomic import atomic_dir
from deltatune.errors import DeltatuneError

_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclasses.dataclass
class TrainState:
    """Loop bookkeeping that a resume needs besides weights and optimiser."""

    step: int = 0  # optimiser steps completed
    epoch: int = 0  # data position of the next micro-batch: epoch ...
    batch_index: int = 0  # ... and index into that epoch's batch order
    best_val_loss: float | None = None
    bad_evals: int = 0  # consecutive validations without improvement (early stopping)
    extra: dict = dataclasses.field(default_factory=dict)  # a recipe's own JSON state (RL: the KL coefficient)


def state_tensors(installed) -> dict[str, torch.Tensor]:
    """The method's state as contiguous CPU tensors, ready for safetensors."""
    return {n: t.detach().contiguous().cpu() for n, t in installed.state().items()}


def _rng_state() -> tuple[dict, dict]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state_all()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    plain = {
        "python": _to_lists(random.getstate()),
        "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
    }
    return tensors, plain


def _to_lists(obj):
    return [_to_lists(x) for x in obj] if isinstance(obj, (tuple, list)) else obj


def _to_tuples(obj):
    return tuple(_to_tuples(x) for x in obj) if isinstance(obj, list) else obj


def save_checkpoint(run_dir, state: TrainState, installed, optimizer, scheduler, keep: int = 2,
                    optimizer_state: dict | None = None) -> Path:
    """Write `checkpoints/step-N` atomically, then prune to the newest `keep` checkpoints.
    `optimizer_state` replaces `optimizer.state_dict()` (fsdp: the shards gathered)."""
    root = Path(run_dir) / "checkpoints"
    final = root / f"step-{state.step}"
    if final.exists():  # same step already saved (e.g. periodic save == final save)
        return final
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-*"):  # leftovers of a crashed save
        shutil.rmtree(stale, ignore_errors=True)
    tensors, plain = _rng_state()
    with atomic_dir(final, tmp_name=f".tmp-step-{state.step}") as tmp:
        save_file(state_tensors(installed), str(tmp / "trainable.safetensors"))
        torch.save(optimizer.state_dict() if optimizer_state is None else optimizer_state, tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(tensors, tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps({**dataclasses.asdict(state), "rng": plain}))
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_best(run_dir, installed, step: int, val_loss: float) -> Path:
    """Keep the method's state at a new lowest val loss as `checkpoints/best-step-N`."""
    root = Path(run_dir) / "checkpoints"
    final = root / f"best-step-{step}"
    with atomic_dir(final, replace=True, tmp_name=f".tmp-best-step-{step}") as tmp:  # replace: a resumed run
        save_file(state_tensors(installed), str(tmp / "trainable.safetensors"))
        (tmp / "best.json").write_text(json.dumps({"step": step, "val_loss": val_loss}))
    for old in root.glob("best-step-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def best_weights(run_dir) -> tuple[Path, dict] | None:
    """(folder, {"step", "val_loss"}) of the kept best weights, or None."""
    found = [json.loads(p.read_text()) | {"path": p.parent}
             for p in (Path(run_dir) / "checkpoints").glob("best-step-*/best.json")]
    if not found:
        return None
    newest = max(found, key=lambda info: info["step"])  # normally the only one
    return newest.pop("path"), newest


def load_best(path, installed) -> None:
    """Copy kept best weights back into the method's state."""
    _load_state(path, installed)


def list_checkpoints(run_dir) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def load_checkpoint(path, installed, optimizer=None, scheduler=None, restore_rng: bool = True) -> TrainState:
    """Load the method's state (+ optimiser, scheduler, RNG) from `path`; returns its TrainState."""
    path = Path(path)
    _load_state(path, installed)
    if optimizer is not None or scheduler is not None:
        load_optimiser(path, optimizer, scheduler)
    payload = json.loads((path / "state.json").read_text())
    rng = payload.pop("rng")
    if restore_rng:
        tensors = torch.load(path / "rng.pt", weights_only=True)
        torch.set_rng_state(tensors["torch"])
        if "cuda" in tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(tensors["cuda"])
        random.setstate(_to_tuples(rng["python"]))
        kind, keys, pos, has_gauss, cached = rng["numpy"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    return TrainState(**payload)


def load_optimiser(path, optimizer=None, scheduler=None, load_state=None) -> None:
    """The optimiser and schedule of checkpoint `path`; `load_state(optimizer, state)` replaces
    `optimizer.load_state_dict` (fsdp: split into shards)."""
    path = Path(path)
    if optimizer is not None:
        state = torch.load(path / "optimizer.pt", weights_only=True)
        (load_state or type(optimizer).load_state_dict)(optimizer, state)
    if scheduler is not None:
        scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))


def _load_state(path: Path, installed) -> None:
    """Copy `path/trainable.safetensors` into the method's state (same names and shapes)."""
    weights = load_file(str(Path(path) / "trainable.safetensors"))
    try:
        installed.load_state(weights, str(path))
    except DeltatuneError as err:
        raise DeltatuneError(f"{err}. Resume with the config the run was started with.") from None
