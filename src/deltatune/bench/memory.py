"""Resident memory of this process: now, the peak so far, and the peak of the training phase.

    phase = TrainingPhase.begin()      # after setup: model loaded, method installed, optimiser built
    ...                                # the training steps
    phase.end()   # {"setup_rss_mib", "whole_peak_mib", "training_peak_mib", "training_growth_mib", ...}

Linux: VmRSS / VmHWM from /proc/self/status; writing "5" to /proc/self/clear_refs resets VmHWM
to the current RSS, so the training phase's own peak is measured apart from loading's (which
can be higher: safetensors reads, a GGUF dequantisation). Elsewhere: resource.getrusage's
ru_maxrss (the whole-process peak only; the phase figures are then None).
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass
from pathlib import Path

_STATUS = Path("/proc/self/status")


def _status_mib(field: str) -> float | None:
    try:
        text = _STATUS.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # the kernel reports KiB
    return None


def rss_mib() -> float | None:
    """Resident memory now (MiB), or None where /proc is missing."""
    return _status_mib("VmRSS")


def peak_mib() -> float:
    """Peak resident memory since start or the last `reset_peak` (MiB)."""
    peak = _status_mib("VmHWM")
    if peak is not None:
        return peak
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / (1024 * 1024) if sys.platform == "darwin" else maxrss / 1024  # bytes on macOS, KiB on Linux


def reset_peak() -> bool:
    """Reset the peak to the current RSS (Linux); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@dataclass
class TrainingPhase:
    """Memory around the training steps of one side (see module docstring)."""

    setup_rss: float | None
    setup_peak: float
    peak_was_reset: bool

    @classmethod
    def begin(cls) -> "TrainingPhase":
        rss, peak = rss_mib(), peak_mib()
        return cls(rss, peak, reset_peak())

    def end(self) -> dict:
        peak_now = peak_mib()
        training_peak = peak_now if self.peak_was_reset else None
        growth = training_peak - self.setup_rss if training_peak is not None and self.setup_rss is not None else None
        return {
            "setup_rss_mib": _round(self.setup_rss),
            "whole_peak_mib": _round(max(self.setup_peak, peak_now)),
            "training_peak_mib": _round(training_peak),
            "training_growth_mib": _round(growth),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
