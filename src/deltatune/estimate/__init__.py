"""deltatune.estimate: peak memory and seconds per step of a training run, before any weight
is loaded (`deltatune estimate CONFIG`; a one-line summary at the start of `deltatune train`).

    from deltatune.estimate import estimate_run
    est = estimate_run(cfg, memory_limit=8 * 2**30)
    est.peak_memory_bytes, est.step_seconds, est.summary_line(), est.table(), est.as_dict()

Modules: model_info (config.json, safetensors headers, the method on a `meta` model), batches
(the recipe's data path and the sampler's micro-batches), probe (the method on 2- and 8-layer
real copies: saved activations and effective FLOP/s), calibrate (process baseline, AdamW cost,
the cache), flops, memory (how the parts make the peak), advice (what to change to fit),
estimator (composes them), report (`Estimate`), cli.
"""

from __future__ import annotations

__all__ = ["Estimate", "estimate_run"]


def estimate_run(cfg, memory_limit: int | None = None, label: str | None = None):
    """See `deltatune.estimate.estimator.estimate_run`."""
    from deltatune.estimate.estimator import estimate_run as run

    return run(cfg, memory_limit=memory_limit, label=label)


def __getattr__(name: str):
    if name == "Estimate":
        from deltatune.estimate.report import Estimate

        return Estimate
    raise AttributeError(name)
