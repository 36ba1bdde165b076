"""The bench's fixed workloads and everything the sides must hold equal.

    spec = BenchSpec(workload="lora-sft", model="/path/to/model", steps=16, batch_size=8, threads=2)
    steps = prepare_steps(spec, tokenizer)          # [[example, ...] x batch_size] x spec.total_steps
    seeded_adapter_init(model, spec.seed)           # the same LoRA A on every side, by canonical name

Held equal on every side: the model folder, the token ids of every batch and their order
(deltatune's length-bucketed order over the built-in data, full batches only, tokenised once by
the parent and shared as JSON), the LoRA config (r 16, alpha 32, dropout 0, every Linear inside
the decoder), its initial A matrices (`seeded_adapter_init`; B starts at zero everywhere), and
the optimiser: AdamW with the same lr / betas / eps / weight decay 0, constant lr without
warm-up, gradients clipped at norm 1.0, one micro-batch per step, fp32.
"""

from __future__ import annotations

import dataclasses
import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from deltatune.data.labels import IGNORE_INDEX
from deltatune.errors import DeltatuneError

LORA_R, LORA_ALPHA, LORA_DROPOUT, LORA_TARGETS = 16, 32, 0.0, "all-linear"
BETAS, EPS, WEIGHT_DECAY, MAX_GRAD_NORM = (0.9, 0.999), 1e-8, 0.0, 1.0
DPO_BETA = 0.1  # DPO's sigmoid loss strength on every side


@dataclass(frozen=True)
class Workload:
    """One row of WORKLOADS: what is trained, how, on which built-in data."""

    name: str
    objective: str  # "sft" (next-token loss on answer tokens) | "dpo" (sigmoid DPO on pairs)
    method: str  # deltatune method.name: "lora" | "full" | "qlora"
    data: str  # a builtin: spec read through deltatune.data
    lr: float
    summary: str

    @property
    def adapter(self) -> bool:
        """LoRA on top of a frozen base (peft on the HF sides), rather than every weight training."""
        return self.method in ("lora", "qlora")


WORKLOADS = {w.name: w for w in (
    Workload("lora-sft", "sft", "lora", "builtin:orgfacts/train", 2e-4,
             "LoRA r16 alpha32 all-linear, prompt-masked instruction data"),
    Workload("full-sft", "sft", "full", "builtin:orgfacts/train", 2e-5,
             "full fine-tuning, prompt-masked instruction data"),
    Workload("qlora-sft", "sft", "qlora", "builtin:orgfacts/train", 2e-4,
             "QLoRA: LoRA r16 over an NF4 (double-quant) base, bitsandbytes on the CPU"),
    Workload("dpo", "dpo", "lora", "builtin:orgfacts/prefs_train", 5e-5,
             "LoRA DPO (sigmoid, beta 0.1), reference = the adapter switched off"),
)}


@dataclass
class BenchSpec:
    """Everything a side needs to build and run its part; written as JSON for the workers."""

    workload: str
    model: str  # a resolved local HF folder
    steps: int = 16  # timed optimiser steps
    warmup: int = 2  # steps run first and not timed (allocators, kernels, optimiser state)
    batch_size: int = 8
    threads: int = 1
    seed: int = 0
    max_length: int = 256
    lr: float | None = None  # None: the workload's
    deltatune_opts: list[str] = field(default_factory=list)  # KEY=VALUE into deltatune's config
    trl_padding_free: str = "auto"  # auto | on | off
    pad_id: int = 0  # the tokenizer's pad id (set by the runner): every side pads with it

    def __post_init__(self):
        if self.workload not in WORKLOADS:
            raise DeltatuneError(f"--workload {self.workload!r}: unknown; known: {', '.join(WORKLOADS)}")
        for name, low in (("steps", 1), ("warmup", 0), ("batch_size", 1), ("threads", 1), ("max_length", 16)):
            if getattr(self, name) < low:
                raise DeltatuneError(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(self, name)}")
        if self.trl_padding_free not in ("auto", "on", "off"):
            raise DeltatuneError(f"--trl-padding-free must be auto, on or off, got {self.trl_padding_free!r}")

    @property
    def spec(self) -> Workload:
        return WORKLOADS[self.workload]

    @property
    def total_steps(self) -> int:
        return self.warmup + self.steps

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else self.spec.lr

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(dataclasses.asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> "BenchSpec":
        return cls(**json.loads(Path(path).read_text()))


# ---------------------------------------------------------------------------------------------
# Data: the batches every side trains on


def prepare_steps(spec: BenchSpec, tokenizer) -> list[list[dict]]:
    """`spec.total_steps` full batches of examples (token ids + labels), in deltatune's
    bucketed order (deltatune.data.BucketedBatches, epochs 0, 1, ... until there are enough)."""
    from deltatune.data import BucketedBatches

    dataset = _tokenised(spec, tokenizer)
    sampler = BucketedBatches(dataset, spec.batch_size, seed=spec.seed)
    steps: list[list[dict]] = []
    for epoch in range(1000):
        full = [idx for idx in sampler.batches(epoch) if len(idx) == spec.batch_size]
        if not full:
            break
        steps += [[dataset[i] for i in idx] for idx in full]
        if len(steps) >= spec.total_steps:
            return steps[: spec.total_steps]
    raise DeltatuneError(f"{spec.spec.data}: only {len(dataset)} usable examples, fewer than one batch of "
                         f"--batch-size {spec.batch_size}")


_TOKENISED: dict[tuple, list[dict]] = {}  # repeated runs in one process (tests) tokenise once


def _tokenised(spec: BenchSpec, tokenizer) -> list[dict]:
    """The workload's examples through the project's own data path (chat template, prompt masked)."""
    key = (spec.spec.data, spec.spec.objective, spec.max_length, tokenizer.name_or_path, len(tokenizer))
    if key not in _TOKENISED:
        _TOKENISED[key] = _tokenise(spec, tokenizer)
    return _TOKENISED[key]


def _tokenise(spec: BenchSpec, tokenizer) -> list[dict]:
    from deltatune.config import DataConfig
    from deltatune.data import build_preference_dataset, build_sft_dataset, load_records

    data_cfg = DataConfig(train=spec.spec.data, max_length=spec.max_length)
    records = load_records(spec.spec.data)
    if spec.spec.objective == "dpo":
        pairs = build_preference_dataset(records, tokenizer, data_cfg)
        return [pair for pair in map(_shared_prompt_pair, pairs.examples) if pair is not None]
    examples = build_sft_dataset(records, tokenizer, data_cfg).examples
    # every example must keep a labelled next token: TRL drops fully masked rows, shifting its batches
    return [ex for ex in examples if any(label != IGNORE_INDEX for label in ex["labels"][1:])]


def _shared_prompt_pair(pair: dict) -> dict | None:
    """The pair with `prompt_len` (where both answers start) and nothing after the answers, or
    None when the two rows do not share their prompt tokens (TRL's layout needs one prompt)."""
    out = dict(pair)
    starts = []
    for side in ("chosen", "rejected"):
        ids, labels = pair[f"{side}_input_ids"], pair[f"{side}_labels"]
        labelled = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
        if not labelled or labelled[0] == 0:
            return None
        end = labelled[-1] + 1  # trailing unlabelled tokens change no log-prob: drop them everywhere
        out[f"{side}_input_ids"], out[f"{side}_labels"] = ids[:end], labels[:end]
        starts.append(labelled[0])
    if starts[0] != starts[1] or pair["chosen_input_ids"][: starts[0]] != pair["rejected_input_ids"][: starts[1]]:
        return None
    out["prompt_len"] = starts[0]
    out["length"] = max(len(out["chosen_input_ids"]), len(out["rejected_input_ids"]))
    return out


def save_steps(steps: list[list[dict]], path: Path) -> None:
    Path(path).write_text(json.dumps(steps))


def load_steps(path: Path) -> list[list[dict]]:
    return json.loads(Path(path).read_text())


def rows_of(examples: list[dict], objective: str) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) of every row a step's batch holds (a pair gives two rows)."""
    if objective == "dpo":
        return [(ex[f"{side}_input_ids"], ex[f"{side}_labels"]) for side in ("chosen", "rejected") for ex in examples]
    return [(ex["input_ids"], ex["labels"]) for ex in examples]


def step_tokens(examples: list[dict], objective: str) -> tuple[int, int]:
    """(tokens the policy's forward sees, i.e. non-padding; labelled next-token positions)."""
    rows = rows_of(examples, objective)
    tokens = sum(len(ids) for ids, _ in rows)
    labelled = sum(sum(1 for label in labels[1:] if label != IGNORE_INDEX) for _, labels in rows)
    return tokens, labelled


# ---------------------------------------------------------------------------------------------
# The same initial adapter on every side


def canonical_name(name: str) -> str:
    """A parameter's name without peft's wrapping: `base_model.model.` and the adapter name."""
    name = name.removeprefix("base_model.model.")
    return name.replace(".default.", ".")


def seeded_adapter_init(model, seed: int) -> int:
    """Overwrite every trainable LoRA A with U(-1/sqrt(in), 1/sqrt(in)) drawn from a generator
    seeded by (seed, canonical name), so deltatune and peft start from identical adapters
    whatever order their inits draw in (B stays zero: both libraries start it there). Returns
    how many matrices were set; a model without LoRA is left alone."""
    import torch

    count = 0
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not (param.requires_grad and ".lora_A." in f".{name}."):
                continue
            key = canonical_name(name)
            gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key.encode()))
            bound = 1.0 / math.sqrt(param.shape[-1])
            values = (torch.rand(param.shape, generator=gen, dtype=torch.float32) * 2 - 1) * bound
            param.copy_(values.to(param.dtype))
            count += 1
    return count
