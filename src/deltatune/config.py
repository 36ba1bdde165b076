"""Typed, strict run configuration: YAML -> validated `Config`, with dotted CLI overrides.

    cfg = load_config("configs/smollm2/sft_lora.yaml", ["train.lr=1e-4", "method.r=16"])

Every section is a pydantic model with `extra="forbid"`: an unknown key is an error naming
the key, where it sits and the closest valid key. Ranges (lr > 0, batch >= 1, ...) are checked
at load, before anything is trained or written. The `method` section is the union of the
registry's method configs (`deltatune.methods.registry.MethodConfig`), picked by `name`; the
valid `recipe` values are the keys of `deltatune.recipes.RECIPES`.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from deltatune.config_aliases import Alias, lookup
from deltatune.atomic import write_text_atomic
from deltatune.errors import DeltatuneError
from deltatune.methods.lora.config import LoraConfig
from deltatune.methods.registry import METHODS, MethodConfig
from deltatune.recipes import RECIPES


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
    val: str | None = None  # unset: `val_split` of data.train is held out as validation
    # share of data.train held out as validation when data.val is not given (0: none); the
    # held-out rows are written to RUN_DIR/val_heldout.jsonl (see deltatune.data.carve)
    val_split: float = Field(0.1, ge=0, lt=1)
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
    # train on only the first N tokens of each replay answer (None: all): the start of a reply
    # is where the tuned model drifts into the user's style, and long answers cost most of the
    # compute (deltatune.replay.sizing.truncate_answers)
    replay_answer_tokens: int | None = Field(None, ge=1)
    replay_repeat: int = Field(1, ge=1)  # each replay example appears this often per epoch
    # replay examples per training example (a seeded subset of the answered prompts); None: all
    # of them. Sized to the user's data so replay never drowns it (deltatune.replay.sizing)
    replay_ratio: float | None = Field(0.5, gt=0)
    # >0: replay tokens are trained towards the base model's top-K next-token distribution
    # (logit distillation) instead of only its greedy token; see deltatune.replay.teacher
    replay_topk: int = Field(0, ge=0, le=1024)
    # loss weight of replay tokens (other tokens weigh 1): like replay_repeat, without the
    # compute; auto: replay weighs REPLAY_SHARE x the user's labelled tokens (replay.sizing)
    replay_weight: Annotated[float, Field(gt=0)] | Literal["auto"] = 1.0
    # held-out general prompts: the base answers them; forgetting = mean per-token KL of the
    # tuned model from the base on those replies (deltatune.eval.forgetting)
    forgetting_prompts: str | None = None

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
    # passes over data.train; `auto` sizes them to the training set (deltatune.training.budget)
    epochs: Annotated[float, Field(gt=0)] | Literal["auto"] = "auto"
    max_steps: int | None = Field(None, gt=0)  # optimiser steps; wins over epochs (auto too) when set
    # examples per micro-batch; auto: smaller batches for small sets (deltatune.training.budget)
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = 8
    grad_accum: int = Field(1, ge=1)  # micro-batches per optimiser step
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["constant", "linear", "cosine"] = "cosine"
    warmup_steps: Annotated[int, Field(ge=0)] | Literal["auto"] = 0  # auto: 5% of the steps
    max_grad_norm: float | None = Field(1.0, gt=0)
    seed: int = 0
    # validation every N optimiser steps (+ at end); auto: about 8 times per run
    eval_every: Annotated[int, Field(gt=0)] | Literal["auto"] | None = None
    save_every: int | None = Field(None, gt=0)  # checkpoint every N optimiser steps (+ at end)
    keep_checkpoints: int = Field(2, ge=1)
    early_stopping_patience: int | None = Field(None, ge=1)  # evals without val-loss gain
    # at the end, go back to the weights with the lowest val loss (saved when reached) if the
    # last weights are worse; the last checkpoint still holds the last weights for --resume
    restore_best: bool = True
    # LoRA+ (Hayou et al. 2024): B matrices train at lr x this ratio (A at lr); LoRA family only
    lr_ratio_b: float | None = Field(None, gt=0)
    log_every: int = Field(1, ge=1)
    num_threads: int | None = Field(None, ge=1)  # torch threads; None = all cores
    # under torchrun: ddp = data parallel (gradients all-reduced, weights replicated)
    distributed: Literal["ddp", "fsdp"] = "ddp"  # under torchrun: replicate (ddp) or shard the blocks (fsdp)
    distributed_timeout_min: int = Field(60, ge=1)  # collectives wait this long (rank 0 evaluates alone)
    # work-cutting options (deltatune.training.speed), same loss and gradients; all off by default.
    # a micro-batch as one row of its examples' real tokens (no padding), attention kept per example
    packing: bool = False
    # cross-entropy over the labelled positions N at a time, logits recomputed in backward (no
    # tokens x vocab tensor for the whole batch); None: all at once
    ce_chunk_tokens: int | None = Field(None, ge=1)
    # recompute each decoder layer's activations in backward: less memory, about one more forward
    gradient_checkpointing: bool = False
    # torch.compile the decoder layers (compile time in the `speed` metrics row); eager if it fails
    compile: bool = False
    # the tokens every row of a micro-batch starts with (a chat template's system prompt) run once
    # per batch, their keys/values shared by the rows (deltatune.shared_prefix); LM loss only.
    # On by default: measured 1.52x vs 1.37x the HF loop's tokens/s, the same loss (deltatune bench)
    shared_prefix: bool = True


class EvalConfig(Section):
    max_new_tokens: int = Field(32, ge=1)
    batch_size: int = Field(32, ge=1)
    before_after: bool = True  # also measure the base model, for the before/after table
    max_examples: int | None = Field(None, ge=1)  # cap per split, for quick looks
    # >0: the probe is also scored over this many seeded sampled replies per question
    # (probe/sampled_contains), which greedy near-ties do not flip; see eval.qa.sampled_contains
    probe_samples: int = Field(0, ge=0)
    sample_temperature: float = Field(0.7, gt=0)
    # more splits of the user's own, measured before and after like data.test: {name: file or
    # builtin:...}, e.g. {mmlu: data/mmlu.jsonl} (a multiple-choice file: question, options,
    # answer; format in deltatune.eval.multiple_choice)
    extra: dict[str, str] = Field(default_factory=dict)
    # what each split reports (names and kinds: deltatune.eval.metrics.METRICS): a mapping
    # {split: [metric, ...]} (splits: test, probe, val, forgetting, data = `deltatune eval
    # --data`, and the eval.extra names), or a plain list for every split that generates
    # answers. A split's list replaces its defaults; unset: test/probe exact_match + contains,
    # val loss + perplexity, forgetting kl, other files both, or mc_accuracy + mc_accuracy_norm
    # when their rows have `options`. E.g. {test: [exact_match, token_f1, rouge_l, bleu, chrf],
    # mmlu: [mc_accuracy, mc_accuracy_norm]}
    metrics: list[str] | dict[str, list[str]] | None = None

    @field_validator("extra")
    @classmethod
    def _extra_names(cls, value: dict[str, str]) -> dict[str, str]:
        from deltatune.eval.runner import CONFIG_SPLITS, DATA_SPLIT

        for name, spec in value.items():
            if name in CONFIG_SPLITS or name == DATA_SPLIT:
                where = "deltatune eval --data" if name == DATA_SPLIT else f"data.{CONFIG_SPLITS[name]}"
                raise ValueError(f"{name!r} is a built-in split ({where}); choose another name")
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", name):
                raise ValueError(f"split name {name!r} must start with a letter and hold only "
                                 f"letters, digits, '_', '-' or '.'")
            if not spec.strip():
                raise ValueError(f"{name}: an empty path; give a file or builtin:NAME/SPLIT")
        return value

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value, info):
        """Metric names from deltatune.eval.metrics.METRICS, split names that exist (the
        fields above are validated first: `extra`, `probe_samples`)."""
        from deltatune.eval.metrics import CHOICE, check_metric_list, kinds
        from deltatune.eval.runner import CONFIG_SPLITS, DATA_SPLIT

        samples = info.data.get("probe_samples")
        if isinstance(value, list):
            check_metric_list(value, "eval.metrics", samples)
            if CHOICE in kinds(value):
                raise ValueError("a plain list applies to every split that generates answers; name the "
                                 "multiple-choice split instead, e.g. {mmlu: [mc_accuracy, mc_accuracy_norm]}")
        elif isinstance(value, dict):
            splits = [*CONFIG_SPLITS, DATA_SPLIT, *(info.data.get("extra") or {})]
            for split, names in value.items():
                if split not in splits:
                    raise ValueError(f"unknown split {split!r}; splits: {', '.join(splits)} "
                                     f"(add a file of your own with eval.extra: {{{split}: FILE}})")
                check_metric_list(names, f"eval.metrics.{split}", samples)
        return value


class LoggingConfig(Section):
    # mirror every number logged to metrics.jsonl (loss, lr, tokens/s, val loss, ...) as
    # TensorBoard scalars in RUN_DIR/tensorboard/ (`tensorboard --logdir RUN_DIR/tensorboard`);
    # needs the tensorboard package: pip install 'deltatune[tensorboard]'
    tensorboard: bool = False

    @field_validator("tensorboard")
    @classmethod
    def _tensorboard_installed(cls, value: bool) -> bool:
        from deltatune.training.metrics import tensorboard_missing

        if value and (problem := tensorboard_missing()):
            raise ValueError(problem)
        return value


class PreferenceConfig(Section):
    """`recipe: rm` and `recipe: dpo` (deltatune.losses.preference, deltatune.losses.reward)."""

    # sigmoid: DPO (Rafailov 2023); ipo: IPO (Azar 2023); hinge: SLiC; simpo (Meng 2024) and
    # orpo (Hong 2024) need no reference model
    loss: Literal["sigmoid", "ipo", "hinge", "simpo", "orpo"] = "sigmoid"
    beta: float = Field(0.1, gt=0)  # DPO's KL strength (IPO's tau); SimPO's reward scale (paper: 2-2.5)
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)  # sigmoid only: conservative DPO's label noise
    simpo_gamma: float = Field(1.0, ge=0)  # simpo: target reward margin (paper: gamma / beta ~ 0.5)
    orpo_lambda: float = Field(0.1, gt=0)  # orpo: weight of the odds-ratio term beside the chosen NLL
    # reference log-probs computed once before training and kept with the pairs (one forward
    # fewer per step); with `full` the alternative is a frozen copy of the model in memory
    precompute_ref: bool = False
    # rm: + coef x (r_chosen + r_rejected)^2, keeps rewards centred (Eisenstein et al. 2023)
    reward_center_coef: float = Field(0.0, ge=0)
    # rm: where the reward head reads a sequence: `last`, its last token (the usual reward model,
    # InstructGPT's), or `answer_mean`, the mean over the answer's tokens (better when answers
    # differ in one span; measured in the README)
    reward_pooling: Literal["last", "answer_mean"] = "last"
    # rm: the reward head's learning rate is train.lr x this (it starts from random, the
    # method from the base)
    head_lr_ratio: float = Field(1.0, gt=0)
    # rm: the head's start: `probe`, a logistic probe fitted on the untrained model's features
    # of the training pairs (LP-FT, Kumar et al. 2022; one no-grad pass), or `random`
    head_init: Literal["probe", "random"] = "probe"


class RLConfig(Section):
    """`recipe: ppo` and `recipe: grpo`: rollouts, reward, KL to the reference, the update."""

    # what scores a completion: a run dir of `recipe: rm`; `contains` / `exact` against the
    # row's reference answer; `python:module:function` (prompt, completion, row) -> float;
    # `judge:MODEL` (a local model asked whether the reply is good, deltatune.rlaif)
    reward: str | None = None
    prompts_per_step: int = Field(8, ge=1)  # prompts sampled per rollout batch (one optimiser phase)
    num_samples: int = Field(4, ge=1)  # grpo: completions per prompt (the group); ppo: per prompt too
    max_new_tokens: int = Field(32, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    kl_coef: float = Field(0.05, ge=0)  # weight of the per-token KL to the reference
    kl_estimator: Literal["k1", "k3"] = "k1"  # ppo's reward shaping; grpo always uses k3 in the loss
    adaptive_kl: bool = False  # ppo: Ziegler et al. 2019's controller moves kl_coef towards kl_target
    kl_target: float = Field(6.0, gt=0)
    kl_horizon: int = Field(10000, ge=1)
    ppo_epochs: int = Field(2, ge=1)  # passes over each rollout batch
    clip_eps: float = Field(0.2, gt=0)  # policy ratio clip
    value_clip: float = Field(0.2, gt=0)  # ppo: value prediction clip
    vf_coef: float = Field(0.1, ge=0)  # ppo: value-loss weight
    # ppo: false (default): the value head reads the policy's hidden states detached, so the
    # value loss trains the head alone and never moves the policy; true: one shared trunk, the
    # value loss's gradient reaching the method's weights too (at this scale it swamped the
    # policy gradient and the run collapsed: README "Preference and RL")
    shared_value_trunk: bool = False
    gamma: float = Field(1.0, gt=0, le=1)  # ppo: discount
    lam: float = Field(0.95, ge=0, le=1)  # ppo: GAE lambda
    whiten_advantages: bool = True  # ppo
    grpo_loss: Literal["token", "sequence"] = "token"  # DAPO per-token or GRPO per-sequence normalisation
    scale_rewards: bool = True  # grpo: divide by the group's std (False: Dr. GRPO)


class ClassifyConfig(Section):
    """`recipe: cls`: sequence classification with a fresh head (deltatune.classify)."""

    text_field: str = Field("text", min_length=1)  # the record key holding the text to classify
    label_field: str = Field("label", min_length=1)  # the record key holding its label (a name or number)
    # how the head sees a sequence: mean of the real tokens' hidden states, the first token's
    # (BERT's [CLS]) or the last real token's; auto: mean for an encoder (what sentence encoders
    # such as all-MiniLM-L6-v2 were trained for), last for a decoder (the only token that has
    # seen the whole text)
    pooling: Literal["auto", "mean", "first", "last"] = "auto"
    # the head's learning rate is train.lr x this (it starts from random, the method from the base)
    head_lr_ratio: float = Field(1.0, gt=0)


class OutputConfig(Section):
    dir: str = "runs/latest"


class Config(Section):
    recipe: str = "sft"  # a key of deltatune.recipes.RECIPES
    model: ModelConfig = ModelConfig()
    # one of the registry's method configs, picked by `name` (a typed union: a bad method key
    # is a config error at load time, naming the key)
    method: MethodConfig = LoraConfig()
    data: DataConfig
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    logging: LoggingConfig = LoggingConfig()  # metrics.jsonl's TensorBoard mirror
    preference: PreferenceConfig = PreferenceConfig()  # recipe: rm, dpo
    rl: RLConfig = RLConfig()  # recipe: ppo, grpo
    classify: ClassifyConfig = ClassifyConfig()  # recipe: cls
    output: OutputConfig = OutputConfig()

    @field_validator("recipe")
    @classmethod
    def _known_recipe(cls, value: str) -> str:
        if value not in RECIPES:
            raise ValueError(f"unknown recipe {value!r}; known: {', '.join(RECIPES)}")
        return value

    @field_validator("method", mode="before")
    @classmethod
    def _method_has_known_name(cls, value: Any) -> Any:
        if value is None:
            return {"name": "lora"}
        if isinstance(value, BaseModel):
            return value
        if not isinstance(value, dict) or "name" not in value:
            raise ValueError(f"method must be a mapping with a `name` (one of {', '.join(METHODS)})")
        if value["name"] not in METHODS:
            raise ValueError(f"unknown method.name {value['name']!r}; known: {', '.join(METHODS)}")
        return value

    @model_validator(mode="after")
    def _lr_ratio_b_needs_b_matrices(self) -> "Config":
        if self.train.lr_ratio_b is not None and not getattr(type(self.method), "has_lora_b", False):
            raise ValueError(
                f"train.lr_ratio_b (LoRA+) sets the lr of LoRA's B matrices; method.name="
                f"{self.method.name!r} has none: use a LoRA-family method or remove train.lr_ratio_b")
        return self


# ---------------------------------------------------------------------------------------------
# Loading, overrides, errors


def read_config_yaml(path: str | Path) -> dict:
    """A config file's raw mapping of sections (not validated); DeltatuneError when the file is
    missing, not YAML, or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise DeltatuneError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise DeltatuneError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise DeltatuneError(f"{path}: the top level must be a mapping of sections")
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read YAML, apply `a.b=value` overrides, validate; DeltatuneError names what is wrong."""
    path = Path(path)
    raw = read_config_yaml(path)
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
    write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))


def load_run_config(run_dir: str | Path) -> Config:
    """The resolved config a training run saved in its run dir."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise DeltatuneError(f"{run_dir} is not a deltatune run dir (no config.yaml inside)")
    return load_config(path)


def _explain(err: ValidationError, raw: dict, source: str) -> str:
    lines = [f"{source}: invalid config"]
    for problem in err.errors():
        loc, section_cls = _user_loc([str(p) for p in problem["loc"]], raw)
        where = ".".join(loc) or "(top level)"
        if problem["type"] == "extra_forbidden":
            hint = _closest(loc, section_cls, raw)
            lines.append(f"  unknown key '{where}'{hint}")
        elif problem["type"] == "missing":
            lines.append(f"  missing required key '{where}'")
        else:
            msg = problem["msg"].removeprefix("Value error, ")
            lines.append(f"  {where}: {msg} (got {problem.get('input')!r})")
    return "\n".join(lines)


def _user_loc(loc: list[str], raw: dict) -> tuple[list[str], type[BaseModel] | None]:
    """An error location as the user wrote it, and the section class that holds its last key.

    Walks the sections from `Config` down. A part that is no field of the section being walked
    is pydantic's, not the user's (a union tag such as 'lora' or 'LoraConfig' in the `method`
    section, 'function-after[...]'), and is dropped; the last part is kept: it is the key."""
    kept: list[str] = []
    section: type[BaseModel] | None = Config
    holder: type[BaseModel] | None = Config
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if section is None:  # inside a plain value (list, mapping): keep indices, drop type names
            if not (part[:1].isupper() or part.startswith("function-")):
                kept.append(part)
        elif part in section.model_fields:
            kept.append(part)
            holder = section
            if section is Config and part == "method":
                section = _method_cls(raw, tag=None if last else loc[i + 1])
            else:
                section = _model_class(section.model_fields[part].annotation)
        elif last:
            kept.append(part)
            holder = section
    return kept, holder


def _model_class(annotation: Any) -> type[BaseModel] | None:
    """The section class a field holds (`X` or `X | None`), None for a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    models = [a for a in get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    return models[0] if len(models) == 1 else None


def _method_cls(raw: dict, tag: str | None = None) -> type[BaseModel] | None:
    """The config class of the method the raw `method.name` picks (else the one pydantic's union
    tag names: a method name or its class name). Only `METHODS[name].config_cls` is relied on."""
    from deltatune.methods.registry import METHODS

    method = raw.get("method")
    name = method.get("name") if isinstance(method, dict) else None
    classes = {n: getattr(spec, "config_cls", None) for n, spec in METHODS.items()}
    for wanted in (name, tag):
        if not isinstance(wanted, str):
            continue
        for method_name, cls in classes.items():
            if wanted in (method_name, getattr(cls, "__name__", None)) and _model_class(cls):
                return cls
    return None


def _sections(raw: dict) -> dict[str, type[BaseModel]]:
    """Every section's config class by its name; `method`'s is the one its `name` picks."""
    found = {}
    for name, field in Config.model_fields.items():
        cls = _method_cls(raw) if name == "method" else _model_class(field.annotation)
        if cls is not None:
            found[name] = cls
    return found


def _closest(loc: list[str], section_cls: type[BaseModel] | None, raw: dict) -> str:
    """' — ...' for an unknown key: the deltatune name of a foreign one (config_aliases), the
    section a misplaced key belongs in, else the nearest key of the same section only."""
    key, here = (loc[-1], ".".join(loc[:-1])) if loc else ("", "")
    alias = lookup(key)
    if alias is not None:
        return _alias_hint(key, here, alias, raw)
    homes = [f"{name}.{key}" for name, cls in _sections(raw).items() if key in cls.model_fields and name != here]
    if homes:
        return _belongs(homes, raw)
    if here and key in Config.model_fields:
        return f" — it is a top-level key: '{key}'"
    if here == "method" and _method_owners(key):
        return _not_this_method(key, raw)
    if section_cls is None:
        return ""
    fields = list(section_cls.model_fields)
    match = difflib.get_close_matches(key, fields, n=1, cutoff=0.5)
    return f" — did you mean '{match[0]}'?" if match else f" — valid keys here: {', '.join(fields)}"


def _alias_hint(key: str, here: str, alias: Alias, raw: dict) -> str:
    """The message for a key name another tool uses (a row of `config_aliases.ALIASES`)."""
    note = f"; {alias.note}" if alias.note else ""
    if alias.key is None:
        return f" — deltatune has no equivalent of this {alias.origin} key{note}"
    section, _, field = alias.key.rpartition(".")
    if field != key:
        return f" — deltatune calls this '{alias.key}' ({alias.origin} name)" + _method_note(alias.key, raw) + note
    if section == here:  # only in `method`: the deltatune name, but the chosen method lacks it
        return _not_this_method(field, raw)
    return _belongs([alias.key], raw)


def _belongs(homes: list[str], raw: dict) -> str:
    """' — it belongs in ...' for a key written outside the section(s) that have it."""
    if len(homes) > 1:
        return " — it belongs in a section: " + " or ".join(f"'{h}'" for h in homes)
    section = homes[0].rpartition(".")[0]
    return f" — it belongs in the '{section}' section: '{homes[0]}'" + _method_note(homes[0], raw)


def _method_note(dotted: str, raw: dict) -> str:
    """', a key of method.name: X' for a `method.` key the chosen method lacks ('' otherwise)."""
    section, _, field = dotted.rpartition(".")
    current = _method_cls(raw)
    if section != "method" or (current is not None and field in current.model_fields):
        return ""
    owners = _method_owners(field)
    return f", a key of method.name: {' or '.join(owners)}" if owners else ", which no installed method has"


def _not_this_method(field: str, raw: dict) -> str:
    method = raw.get("method")
    name = method.get("name") if isinstance(method, dict) else None
    owners = _method_owners(field)
    has = f"method.name: {' or '.join(owners)} has it" if owners else "no installed method has it"
    return f" — method {name!r} has no such key; {has}"


def _method_owners(field: str) -> list[str]:
    """The methods whose config class has `field` (only `METHODS[name].config_cls` is relied on)."""
    from deltatune.methods.registry import METHODS

    return [name for name, spec in METHODS.items()
            if field in getattr(getattr(spec, "config_cls", None), "model_fields", {})]
