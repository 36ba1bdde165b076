"""What a run cost: peak memory and training throughput, recorded at the end of every run.

    meter = Throughput(); meter.add(tokens, seconds)            # per optimiser step
    usage = resources(meter)    # {"peak_rss_mib", "train_seconds", "train_tokens", "tokens_per_s", ...}

Peak resident memory is the whole process's high-water mark (`getrusage`: it includes loading
and the replay teacher's pass, which is what decides whether a run fits the machine); on CUDA
the peak of tensors allocated on the device is added. Throughput counts every token in the
training batches (padding excluded) over the time spent in optimiser steps only (validation and
evaluation excluded), so methods compare on the work they do per token.
"""

from __future__ import annotations

import resource
import sys

import torch


class Throughput:
    """Tokens and seconds of the optimiser steps of this process (a resumed run counts its own)."""

    def __init__(self) -> None:
        self.tokens = 0
        self.seconds = 0.0

    def add(self, tokens: int, seconds: float) -> None:
        self.tokens += tokens
        self.seconds += seconds


def peak_rss_mib() -> float:
    """This process's peak resident set size in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def resources(meter: Throughput) -> dict:
    """The end-of-run record (see module docstring)."""
    out = {"peak_rss_mib": peak_rss_mib(), "train_seconds": round(meter.seconds, 2), "train_tokens": meter.tokens,
           "tokens_per_s": round(meter.tokens / meter.seconds, 1) if meter.seconds else None}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda_peak_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out
