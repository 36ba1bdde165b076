"""Where the model runs and in which precision: one place for `model.device` / `model.dtype`.

    device = resolve_device("auto")                 # cuda if torch sees a GPU, else cpu
    with autocast_for(cfg.model.dtype, device):     # training / validation forward passes
        loss, n = model_lm_loss(model, batch)

Precision policy (mixed precision, as a GPU user expects):
  - `model.dtype: float32` (default; this project's CPUs have no fast bf16): everything fp32.
  - `bfloat16` / `float16`: forward passes run under `torch.autocast` in that dtype. Trained
    weights stay fp32 "master" copies (AdamW updates of 1e-4 relative size vanish in bf16):
    LoRA-style methods keep the frozen base stored in the low dtype (the memory saving) and
    their own small weights in fp32; full / freeze load the model in fp32.
  - Training in float16 needs loss scaling against gradient underflow, which the loop does not
    do: it is refused with a message pointing at bfloat16. float16 inference is fine.
"""

from __future__ import annotations

import contextlib

import torch

from deltatune.errors import DeltatuneError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """`auto` -> cuda when available (else cpu); an explicit device must exist."""
    if isinstance(spec, torch.device):
        return spec
    spec = spec or "auto"
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeltatuneError(f"model.device {spec!r}: this torch sees no CUDA GPU "
                                 f"(torch {torch.__version__}); set model.device=cpu or auto")
        index = int(spec.split(":")[1]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise DeltatuneError(f"model.device {spec!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    if spec == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeltatuneError("model.device 'mps': this torch has no MPS backend; set model.device=cpu or auto")
    return torch.device(spec)


def check_training_precision(dtype: str, device: torch.device) -> None:
    """Refuse precisions the training loop cannot train in, before anything is written."""
    if dtype == "float16":
        raise DeltatuneError("model.dtype float16: training in fp16 needs loss scaling, which deltatune "
                             "does not do; use model.dtype=bfloat16 (or float32). fp16 is fine for "
                             "eval / generate / serve.")
    if dtype == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeltatuneError(f"model.dtype bfloat16: {torch.cuda.get_device_name(device)} has no bf16 "
                             f"support; use model.dtype=float32")


def storage_dtype(dtype: str, trains_base_weights: bool) -> str:
    """The dtype to load weights in: fp32 master weights when the base itself is trained."""
    return "float32" if trains_base_weights else dtype


def autocast_for(dtype: str, device: torch.device):
    """`torch.autocast` in `dtype` on `device` for low precision; a no-op for float32."""
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[dtype])


def keep_trainable_fp32(model: torch.nn.Module) -> None:
    """Upcast trainable low-precision parameters to fp32 (master weights)."""
    for param in model.parameters():
        if param.requires_grad and param.dtype in (torch.bfloat16, torch.float16):
            param.data = param.data.float()


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device
