"""The measured parts of an estimate, taken once per machine and cached: the process baseline
(what python + torch + transformers + deltatune hold before any model exists) and AdamW's
cost per trainable parameter; plus the cache the model-shaped probe (`estimate.probe`) uses.

    baseline = process_baseline_bytes()          # measured in a fresh interpreter, then cached
    seconds = adamw_seconds_per_param("cpu")     # one AdamW step over 16M fp32 parameters
    value = cached("probe", key, compute)        # $DELTATUNE_HOME/estimate/probe-<hash>.json

Entries live in $DELTATUNE_HOME/estimate/<kind>-<24 hex of the key's sha256>.json as
{"key": ..., "value": ...}, written atomically, the same way `deltatune.eval.base_cache` keys
the base model's evaluation: the key holds everything the value depends on (here: the machine's
CPU, the thread count, the device, the torch and transformers versions and
`CALIBRATION_VERSION`), so a stale entry is never hit; `DELTATUNE_NO_CACHE=1` skips reading.
Timings depend on what else runs on the machine: calibrate on a quiet one, or delete the
folder to measure again.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

CALIBRATION_VERSION = 2  # bump when a measurement below changes what it reports
NO_CACHE_ENV = "DELTATUNE_NO_CACHE"
FALLBACK_BASELINE_BYTES = 300 * 2**20  # when the baseline cannot be measured (said in the notes)
ADAMW_PROBE_PARAMS = 16_000_000  # 256 MB of state: past the caches, as a model's is

# What `deltatune train` has imported before it loads a model (the CLI, a recipe, the loop,
# transformers' causal-LM classes); printed resident memory in bytes.
_BASELINE_CODE = """
import deltatune.cli, deltatune.recipes.sft, deltatune.training.loop, deltatune.methods.registry
import torch, transformers
from transformers import AutoModelForCausalLM, AutoTokenizer
for line in open('/proc/self/status'):
    if line.startswith('VmRSS:'):
        print(int(line.split()[1]) * 1024)
"""


def estimate_home() -> Path:
    from deltatune.models.embedded import deltatune_home

    return deltatune_home() / "estimate"


def machine_key(device_type: str = "cpu", threads: int | None = None) -> dict:
    """What a timing depends on besides the work itself: processor, threads, device, versions."""
    import torch
    import transformers

    key = {"calibration_version": CALIBRATION_VERSION, "cpu": cpu_name(), "machine": platform.machine(),
           "threads": threads or torch.get_num_threads(), "device": device_type,
           "torch": torch.__version__, "transformers": transformers.__version__}
    if device_type == "cuda":
        key["gpu"] = torch.cuda.get_device_name()
    return key


def code_fingerprint() -> str:
    """sha256 (24 hex) of the deltatune sources that decide what a training step computes and
    holds (methods, losses, the forward path, data collation, training options, model loading):
    editing any of them measures the probe again."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for part in ("methods", "losses", "data", "training", "models", "forward.py"):
        paths = [root / part] if (root / part).is_file() else sorted((root / part).rglob("*.py"))
        for path in paths:
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:24]


def cpu_name() -> str:
    """The processor's model name (/proc/cpuinfo on Linux, platform.processor() elsewhere)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cached(kind: str, key: dict, compute: Callable[[], dict]) -> dict:
    """`compute()`'s JSON value for `key`, read from $DELTATUNE_HOME/estimate when present."""
    text = _canonical(key)
    path = estimate_home() / f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:24]}.json"
    if os.environ.get(NO_CACHE_ENV, "") in ("", "0") and path.is_file():
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            if entry.get("key") == json.loads(text) and isinstance(entry.get("value"), dict):
                return entry["value"]
        except (OSError, ValueError):
            pass  # unreadable: measured again below and replaced
    value = compute()
    from deltatune.atomic import write_json_atomic

    try:
        write_json_atomic(path, {"key": json.loads(text), "value": value})
    except OSError:
        pass  # a read-only home only costs the next run the measurement
    return value


def process_baseline_bytes() -> tuple[int, str]:
    """(resident bytes of a fresh interpreter that imported what `deltatune train` imports, how
    it was obtained). Measured once in a subprocess (a few seconds), then cached."""
    import torch
    import transformers

    key = {"calibration_version": CALIBRATION_VERSION, "python": sys.executable, "torch": torch.__version__,
           "transformers": transformers.__version__}

    def measure() -> dict:
        try:
            out = subprocess.run([sys.executable, "-c", _BASELINE_CODE], capture_output=True, text=True,
                                 timeout=300, check=True)
            return {"bytes": int(out.stdout.strip().splitlines()[-1])}
        except (OSError, subprocess.SubprocessError, ValueError, IndexError) as err:
            return {"bytes": None, "error": f"{type(err).__name__}: {err}"[:200]}

    value = cached("baseline", key, measure)
    if value.get("bytes"):
        return int(value["bytes"]), "measured"
    return FALLBACK_BASELINE_BYTES, f"not measured ({value.get('error')}); assumed 300 MiB"


def adamw_seconds_per_param(device, threads: int | None = None) -> float:
    """Seconds one AdamW step (with gradient clipping) takes per fp32 trainable parameter on
    `device`: timed over ADAMW_PROBE_PARAMS parameters, best of three, cached, with the kernel
    training picks (`training.optim`: fused where it applies). A memory-bound pass (parameter,
    gradient and both moments read, three written), so it scales per element once the state is
    larger than the processor's caches."""
    import torch

    from deltatune.training.optim import fused_applies

    device = torch.device(device)

    def measure() -> dict:
        param = torch.nn.Parameter(torch.zeros(ADAMW_PROBE_PARAMS, device=device))
        param.grad = torch.randn(ADAMW_PROBE_PARAMS, device=device)
        optimiser = torch.optim.AdamW([param], lr=1e-4, fused=fused_applies([param]))
        optimiser.step()  # the first step allocates the moments: not timed
        times = []
        for _ in range(3):
            _sync(device)
            start = time.perf_counter()
            torch.nn.utils.clip_grad_norm_([param], 1.0)
            optimiser.step()
            _sync(device)
            times.append(time.perf_counter() - start)
        return {"seconds_per_param": min(times) / ADAMW_PROBE_PARAMS}

    with thread_count(threads):
        return float(cached("adamw", machine_key(device.type, threads), measure)["seconds_per_param"])


class thread_count:
    """`with thread_count(n):` torch runs on n threads inside (the run's `train.num_threads`);
    None leaves torch's setting alone."""

    def __init__(self, threads: int | None):
        self.threads, self.before = threads, None

    def __enter__(self):
        import torch

        if self.threads:
            self.before = torch.get_num_threads()
            torch.set_num_threads(self.threads)
        return self

    def __exit__(self, *exc):
        import torch

        if self.before is not None:
            torch.set_num_threads(self.before)
        return False


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
