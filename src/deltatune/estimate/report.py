"""The `Estimate` a run gets: a table for people, one line for the start of `deltatune train`,
and one JSON object for scripts.

    est = estimate_run(cfg)
    print(est.table());  print(est.summary_line());  json.dumps(est.as_dict())

`as_dict()` keys: peak_memory_bytes, train_peak_bytes, limited_by, breakdown (bytes of each part:
baseline, weights, gradients, optimizer, activations, allocator, replay), step_seconds,
total_steps, total_minutes, timing, parameters, batches, device, dtype, notes, memory_limit_bytes,
fits, suggestions. How the parts combine is `estimate.memory`'s docstring; the step time,
`estimate.estimator`'s.
"""

from __future__ import annotations

import dataclasses

from deltatune.estimate.memory import MIB

PART_LABELS = {"baseline": "baseline (python, torch)", "weights": "weights", "gradients": "gradients",
               "optimizer": "optimiser (AdamW)", "activations": "activations", "allocator": "allocator",
               "replay": "replay phase (apart)"}


@dataclasses.dataclass
class Estimate:
    label: str
    recipe: str
    method: str
    model: str
    device: str
    dtype: str
    variant: object  # estimator.Variant
    notes: list[str]
    suggestions: list  # advice.Suggestion
    memory_limit: int | None

    @classmethod
    def from_variant(cls, ctx, variant, suggestions, memory_limit, label=None) -> "Estimate":
        cfg = variant.cfg
        notes = list(ctx.notes) + [f"baseline {ctx.baseline_note}"]
        if variant.counts.source == "probe":
            notes.append("parameter counts from 2- and 8-layer copies (this method cannot be installed on 'meta')")
        if variant.probe.cached:
            notes.append("probe and calibration from the cache ($DELTATUNE_HOME/estimate)")
        return cls(label or cfg.output.dir, cfg.recipe, cfg.method.name, cfg.model.name, ctx.device.type,
                   cfg.model.dtype, variant, notes, suggestions, memory_limit)

    @property
    def peak_memory_bytes(self) -> int:
        return self.variant.memory.peak

    @property
    def step_seconds(self) -> float:
        return self.variant.timing.step_seconds

    @property
    def fits(self) -> bool | None:
        return None if self.memory_limit is None else self.peak_memory_bytes <= self.memory_limit

    def summary_line(self) -> str:
        """One line: peak memory and its main parts, step time, steps and minutes."""
        memory, timing = self.variant.memory, self.variant.timing
        parts = ", ".join(f"{name} {_gib(memory.breakdown()[name])}" for name in ("weights", "activations", "optimizer"))
        return (f"estimate: peak memory ~{_gib(memory.peak)} GiB ({parts} GiB; limited by {memory.limited_by}), "
                f"~{timing.step_seconds:.2f} s/step x {timing.total_steps} steps ~ {timing.total_minutes:.1f} min "
                f"(deltatune estimate for details)")

    def table(self) -> str:
        v = self.variant
        memory, timing, plan, counts = v.memory, v.timing, v.plan, v.counts
        lines = [f"deltatune estimate: {self.label} ({self.recipe}, {self.method} on {self.model}, "
                 f"{self.device} {self.dtype})",
                 f"  trainable parameters  {counts.trainable:,} of {counts.total:,} "
                 f"({100 * counts.trainable / max(counts.total, 1):.2f}%)",
                 f"  micro-batches         peak {plan.peak.rows:g} x {plan.peak.width:g} tokens "
                 f"({plan.peak.labelled:g} labelled); mean {plan.mean.rows:.1f} x {plan.mean.width:.1f}; "
                 f"{plan.n_user} examples" + (f" + {plan.n_replay} replay" if plan.n_replay else ""),
                 "", "  memory                         MiB"]
        details = {"weights": v.weights_note, "activations": "saved for backward at the peak micro-batch"
                   + (" (gradient checkpointing)" if v.checkpointing else "") + " + the head's backward",
                   "allocator": "held by the allocator beyond live tensors", "replay": v.replay_note}
        for name, value in memory.breakdown().items():
            if name == "replay" and not value:
                continue
            lines.append(f"    {PART_LABELS[name]:<26} {value / MIB:>9,.0f}   {details.get(name, '')}".rstrip())
        lines += [f"    {'peak':<26} {memory.peak / MIB:>9,.0f}   limited by {memory.limited_by}: baseline + weights + "
                  f"optimiser + max(activations + allocator, gradients)",
                  "", "  time",
                  f"    step                       {timing.step_seconds:>9.2f} s  forward+backward "
                  f"{timing.forward_backward_seconds:.2f} s (blocks {timing.layer_gflops:.0f}, rest "
                  f"{timing.rest_gflops:.0f} GFLOP/s effective) + AdamW {timing.optimizer_seconds:.3f} s",
                  f"    steps                      {timing.total_steps:>9,}   {plan.budget.rule}",
                  f"    training                   {timing.total_minutes:>9.1f} min  optimiser steps only "
                  f"(validation and evaluation come on top)"]
        if self.memory_limit is not None:
            verdict = "fits" if self.fits else "does not fit"
            lines += ["", f"  budget {self.memory_limit / MIB:,.0f} MiB: {verdict}"]
            for s in self.suggestions:
                mark = "fits" if s.fits else "    "
                lines.append(f"    {mark}  {s.peak_memory_bytes / MIB:>8,.0f} MiB  {s.step_seconds:>7.2f} s/step  "
                             f"{s.change}  ({s.why})")
        lines += [""] + [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def as_dict(self) -> dict:
        v = self.variant
        return {"peak_memory_bytes": v.memory.peak, "train_peak_bytes": v.memory.train_peak,
                "limited_by": v.memory.limited_by, "breakdown": v.memory.breakdown(),
                "step_seconds": round(v.timing.step_seconds, 4), "total_steps": v.timing.total_steps,
                "total_minutes": round(v.timing.total_minutes, 3), "timing": v.timing.as_dict(),
                "parameters": {"trainable": v.counts.trainable, "total": v.counts.total, "source": v.counts.source},
                "batches": {"batch_size": v.plan.batch_size, "grad_accum": v.plan.grad_accum,
                            "peak": v.plan.peak.as_dict(), "mean": v.plan.mean.as_dict(),
                            "micro_batches": v.plan.micro_batches, "examples": v.plan.n_user,
                            "replay_examples": v.plan.n_replay, "budget": v.plan.budget.as_dict()},
                "gradient_checkpointing": v.checkpointing, "config": self.label, "recipe": self.recipe,
                "method": self.method, "model": self.model, "device": self.device, "dtype": self.dtype,
                "memory_limit_bytes": self.memory_limit, "fits": self.fits,
                "suggestions": [s.as_dict() for s in self.suggestions], "notes": self.notes}


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f}"
