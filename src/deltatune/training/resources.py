"""What a run cost: peak memory and training throughput, recorded at the end of every run.

    meter = Throughput(); meter.add(tokens, seconds)            # per optimiser step
    usage = resources(meter)    # {"peak_rss_mib", "train_seconds", "train_tokens", "tokens_per_s", ...}

Peak resident memory is reported twice: the whole process's high-water mark (`getrusage`: it
includes loading and the replay teacher's pass, which is what decides whether a run fits the
machine) and the training phase's own (`train_peak_rss_mib`: on Linux the high-water mark is
reset when training starts, after freed memory is handed back to the OS, so a base that was
loaded in fp32 and then quantised is measured as it trains). On CUDA the peak of tensors
allocated on the device is added. Throughput counts every token in the
training batches (padding excluded) over the time spent in optimiser steps only (validation and
evaluation excluded), so methods compare on the work they do per token.
"""

from __future__ import annotations

import ctypes
import gc
import resource
import sys

import torch


class Throughput:
    """Tokens and seconds of the optimiser steps of this process (a resumed run counts its own).
    Made when training starts: it resets the resident-memory high-water mark (see the module
    docstring)."""

    def __init__(self) -> None:
        self.tokens = 0
        self.seconds = 0.0
        self.peak_before_training = peak_rss_mib()  # the reset below clears getrusage's mark too
        self.phase_peak_known = reset_peak_rss()

    def add(self, tokens: int, seconds: float) -> None:
        self.tokens += tokens
        self.seconds += seconds


def peak_rss_mib() -> float:
    """This process's peak resident set size in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def reset_peak_rss() -> bool:
    """Hand freed heap back to the OS (glibc `malloc_trim`) and reset this process's
    resident-memory high-water mark (Linux: `/proc/self/clear_refs` 5). False where unsupported."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def phase_peak_rss_mib() -> float | None:
    """VmHWM (the high-water mark since the last reset) in MiB, or None off Linux."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def resources(meter: Throughput) -> dict:
    """The end-of-run record (see module docstring)."""
    out = {"peak_rss_mib": max(meter.peak_before_training, peak_rss_mib()),
           "train_peak_rss_mib": phase_peak_rss_mib() if meter.phase_peak_known else None,
           "train_seconds": round(meter.seconds, 2), "train_tokens": meter.tokens,
           "tokens_per_s": round(meter.tokens / meter.seconds, 1) if meter.seconds else None}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda_peak_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out
