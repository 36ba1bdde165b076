"""Typed, strict run configuration: YAML -> validated `Config`, with dotted CLI overrides.

    cfg = load_config("configs/smollm2/sft_lora.yaml", ["train.lr=1e-4", "method.r=16"])

Every section is a pydantic model with `extra="forbid"`: an unknown key is an error naming
the key, where it sits and the closest valid key. Ranges (lr > 0, batch >= 1, ...) are checked
at load, before anything is trained or written. The `method` section is validated by the
config class its `name` picks in `deltatune.methods.registry`.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from deltatune.errors import DeltatuneError


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, assignments are re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Section):
    name: str = "smollm2-135m"  # embedded alias, local HF folder, or hub id (when online)
    # Compute precision. Methods that add small modules (LoRA) keep the frozen base in this
    # dtype and their own weights in fp32; full / freeze keep fp32 master weights. Training in
    # bfloat16/float16 runs under autocast (see deltatune.models.device).
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")  # auto: cuda if available
    trust_remote_code: bool = False  # never on unless the user asks


class DataConfig(Section):
    train: str  # file path (.json/.jsonl/.csv) or builtin:NAME/SPLIT
    val: str | None = None
    test: str | None = None  # QA split for generation accuracy (needs an `answer` or `output`)
    probe: str | None = None  # forgetting probe, measured before and after
    format: Literal["auto", "alpaca", "messages", "text"] = "auto"
    max_length: int = Field(512, gt=0)
    train_on_prompt: bool = False
    system_prompt: str | None = None  # None: the chat template's own default
    pack: bool = False  # text format: concatenate and cut into max_length blocks
    # Self-distillation replay against forgetting: prompts (a file or builtin:general/prompts,
    # or a list of them) that the base model answers before training; its answers join `train`.
    replay: str | list[str] | None = None
    replay_max_new_tokens: int = Field(128, ge=1)
    replay_repeat: int = Field(1, ge=1)  # each replay example appears this often per epoch
    # >0: replay tokens are trained towards the base model's top-K next-token distribution
    # (logit distillation) instead of only its greedy token; see deltatune.data.distill
    replay_topk: int = Field(0, ge=0, le=1024)
    # loss weight of replay tokens (other tokens weigh 1): like replay_repeat, without the compute
    replay_weight: float = Field(1.0, gt=0)

    @field_validator("replay")
    @classmethod
    def _replay_list_not_empty(cls, value):
        if isinstance(value, list) and not value:
            raise ValueError("an empty list; leave data.replay unset (null) to train without replay")
        return value

    def replay_sources(self) -> list[str]:
        """`data.replay` as a list of prompt sources (empty when replay is off)."""
        if self.replay is None:
            return []
        return [self.replay] if isinstance(self.replay, str) else list(self.replay)


class TrainConfig(Section):
    epochs: float = Field(3.0, gt=0)
    max_steps: int | None = Field(None, gt=0)  # optimiser steps; overrides epochs when set
    batch_size: int = Field(8, ge=1)  # examples per micro-batch
    grad_accum: int = Field(1, ge=1)  # micro-batches per optimiser step
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["constant", "linear", "cosine"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    seed: int = 0
    eval_every: int | None = Field(None, gt=0)  # validation every N optimiser steps (+ at end)
    save_every: int | None = Field(None, gt=0)  # checkpoint every N optimiser steps (+ at end)
    keep_checkpoints: int = Field(2, ge=1)
    early_stopping_patience: int | None = Field(None, ge=1)  # evals without val-loss gain
    # at the end, go back to the weights with the lowest val loss (saved when reached) if the
    # last weights are worse; the last checkpoint still holds the last weights for --resume
    restore_best: bool = True
    log_every: int = Field(1, ge=1)
    num_threads: int | None = Field(None, ge=1)  # torch threads; None = all cores


class EvalConfig(Section):
    max_new_tokens: int = Field(32, ge=1)
    batch_size: int = Field(32, ge=1)
    before_after: bool = True  # also measure the base model, for the before/after table
    max_examples: int | None = Field(None, ge=1)  # cap per split, for quick looks
    # >0: the probe is also scored over this many seeded sampled replies per question
    # (probe/sampled_contains), which greedy near-ties do not flip; see eval.qa.sampled_contains
    probe_samples: int = Field(0, ge=0)
    sample_temperature: float = Field(0.7, gt=0)


class OutputConfig(Section):
    dir: str = "runs/latest"


class Config(Section):
    recipe: Literal["sft", "pt"] = "sft"
    model: ModelConfig = ModelConfig()
    method: Any = None  # validated into the method's own config class below
    data: DataConfig
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    output: OutputConfig = OutputConfig()

    @field_validator("method", mode="before")
    @classmethod
    def _method_by_name(cls, value: Any) -> Any:
        from deltatune.methods.registry import METHODS

        if value is None:
            value = {"name": "lora"}
        if isinstance(value, BaseModel):
            return value
        if not isinstance(value, dict) or "name" not in value:
            raise ValueError(f"method must be a mapping with a `name` (one of {sorted(METHODS)})")
        spec = METHODS.get(value["name"])
        if spec is None:
            raise ValueError(f"unknown method.name {value['name']!r}; known: {sorted(METHODS)}")
        return spec.config_cls.model_validate(value)


# ---------------------------------------------------------------------------------------------
# Loading, overrides, errors


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read YAML, apply `a.b=value` overrides, validate; DeltatuneError names what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise DeltatuneError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise DeltatuneError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise DeltatuneError(f"{path}: the top level must be a mapping of sections")
    for item in overrides or []:
        apply_override(raw, item)
    return validate_config(raw, source=str(path))


def validate_config(raw: dict, source: str = "<config>") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise DeltatuneError(_explain(err, raw, source)) from None


def apply_override(raw: dict, item: str) -> None:
    """Set `section.key=value` in the raw mapping; the value is parsed as YAML (1e-4, true, [a])."""
    if "=" not in item:
        raise DeltatuneError(f"override {item!r} must look like section.key=value (e.g. train.lr=1e-4)")
    dotted, text = item.split("=", 1)
    keys = dotted.strip().split(".")
    node = raw
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise DeltatuneError(f"override {item!r}: {key!r} is not a section")
    value = yaml.safe_load(text) if text.strip() else None
    # YAML reads 1e-4 as a string (no dot); accept it as the number the user meant.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in "eE.") else value
        except ValueError:
            pass
    node[keys[-1]] = value


def dump_config(cfg: Config, path: str | Path) -> None:
    """Write the fully-resolved config (defaults filled in) as YAML."""
    data = cfg.model_dump(mode="json")
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False))


def load_run_config(run_dir: str | Path) -> Config:
    """The resolved config a training run saved in its run dir."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise DeltatuneError(f"{run_dir} is not a deltatune run dir (no config.yaml inside)")
    return load_config(path)


def _explain(err: ValidationError, raw: dict, source: str) -> str:
    lines = [f"{source}: invalid config"]
    for problem in err.errors():
        loc = [str(p) for p in problem["loc"] if not str(p).startswith("function-")]
        # pydantic puts the sub-model class name into the path of the `method` union; drop it.
        loc = [p for p in loc if not p[:1].isupper()]
        where = ".".join(loc) or "(top level)"
        if problem["type"] == "extra_forbidden":
            hint = _closest(loc, raw)
            lines.append(f"  unknown key '{where}'{hint}")
        elif problem["type"] == "missing":
            lines.append(f"  missing required key '{where}'")
        else:
            msg = problem["msg"].removeprefix("Value error, ")
            lines.append(f"  {where}: {msg} (got {problem.get('input')!r})")
    return "\n".join(lines)


def _closest(loc: list[str], raw: dict) -> str:
    """' — did you mean X?' for an unknown key, from the fields valid at that place."""
    section_cls: type[BaseModel] = Config
    if len(loc) > 1:
        if loc[0] == "method":
            from deltatune.methods.registry import METHODS

            spec = METHODS.get((raw.get("method") or {}).get("name", ""))
            section_cls = spec.config_cls if spec else None
        else:
            field = Config.model_fields.get(loc[0])
            section_cls = getattr(field, "annotation", None) if field else None
    if not (isinstance(section_cls, type) and issubclass(section_cls, BaseModel)):
        return ""
    match = difflib.get_close_matches(loc[-1], list(section_cls.model_fields), n=1, cutoff=0.5)
    valid = ", ".join(section_cls.model_fields)
    return f" — did you mean '{match[0]}'?" if match else f" — valid keys here: {valid}"
