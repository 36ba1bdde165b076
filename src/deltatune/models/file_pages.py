"""Let go of a loaded checkpoint's file pages once the model no longer needs them.

    release_file_pages(model)     # after quantising: the fp32 file's pages leave resident memory

On the CPU transformers loads safetensors as views of the memory-mapped file: every page a
weight was read from stays resident (and counted in the process's RSS) for as long as *any*
tensor of that file lives. After QLoRA has quantised the decoder Linears, the fp32 pages of
those weights are dead weight, but the embeddings and norms still view the same mapping and
keep the whole file in. Copying the remaining tensors into ordinary memory drops the last
references, so the mapping closes; glibc's `malloc_trim` then hands the heap the quantisation
freed back to the system. Measured on SmolLM2-135M after the 4-bit load: 891 MB -> 593 MB RSS.
"""

from __future__ import annotations

import ctypes
import gc

import torch
from torch import nn


def release_file_pages(model: nn.Module) -> None:
    """Copy every plain CPU parameter and buffer of `model` into its own memory (values, ties
    and requires_grad unchanged; quantised parameters, built in fresh memory, are left as they
    are), then collect garbage and trim the heap. Tensors on other devices are not touched."""
    with torch.no_grad():
        for module in model.modules():
            for name, param in list(module._parameters.items()):
                if type(param) is nn.Parameter and param.device.type == "cpu":
                    param.data = param.data.clone()  # the same Parameter object: ties are kept
            for name, buffer in list(module._buffers.items()):
                if buffer is not None and buffer.device.type == "cpu":
                    module._buffers[name] = buffer.clone()
    gc.collect()
    trim_heap()


def trim_heap() -> None:
    """glibc's malloc_trim(0): return freed heap pages to the system (absent elsewhere: skipped)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
