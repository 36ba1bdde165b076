"""What a comparison will train: one validated config per (method, seed), checked before any run.

    plan = make_plan("configs/smollm2/sft_lora.yaml", "lora,ia3,bitfit", seeds=3, out="runs/cmp",
                     overrides=["train.max_steps=50"])
    plan.runs[0].name, plan.runs[0].cfg.output.dir      # "lora-seed0", "runs/cmp/runs/lora-seed0"

Every run shares the base config's data, budget (epochs / steps / tokens), evaluation and
model; what differs per method is only what a method needs to learn at all:

1. the base config's own method: its `method:` section and `train.lr` as written;
2. another method: `method:` and `train.lr` from that method's ready YAML, the first found of
   `<recipe>_<method>.yaml` then `sft_<method>.yaml` in `--method-configs DIR`, the base
   config's folder and deltatune's `configs/smollm2/` (LoRA trains at 2e-3, IA3 at 3e-2, full
   fine-tuning at 2e-5: one shared lr would make the comparison about the lr);
3. no YAML for it: the method's defaults (`method.name=<m>`) and the base lr, said in the report.

Then the `k=v` overrides apply to every run, then `--set METHOD:k=v` to that method's runs;
`train.seed` is the base seed + k for seed k; `output.dir` is OUT/runs/<method>-seed<seed>.
An unknown method or an invalid config fails here, before any run starts or any folder is made.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from deltatune.config import Config, apply_override, validate_config
from deltatune.config import read_config_yaml as read_yaml
from deltatune.errors import DeltatuneError

REPO_CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "smollm2"  # a source checkout's ready YAMLs


@dataclass
class MethodSettings:
    """The per-method part of each of a method's runs, and where it came from."""

    method: str
    section: dict  # the `method:` mapping
    lr: float | None  # None: the base config's train.lr
    source: str  # "base config" | a YAML path | "method defaults"


@dataclass
class PlannedRun:
    method: str
    seed: int
    cfg: Config

    @property
    def name(self) -> str:
        return f"{self.method}-seed{self.seed}"

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.output.dir)


@dataclass
class Plan:
    config: str
    out: Path
    methods: list[str]
    seeds: list[int]
    overrides: list[str]
    per_method: dict[str, list[str]]
    settings: dict[str, MethodSettings]
    runs: list[PlannedRun] = field(default_factory=list)
    isolated: bool = False  # each run trained in its own process (compare's default)

    def describe(self) -> dict:
        """The plan as plain JSON (report.json's header)."""
        return {"config": self.config, "out": str(self.out), "methods": self.methods, "seeds": self.seeds,
                "isolated": self.isolated,
                "overrides": self.overrides, "per_method_overrides": self.per_method,
                "method_settings": {m: {"source": s.source, "lr": s.lr, "method": s.section}
                                    for m, s in self.settings.items()}}


def parse_methods(text: str) -> list[str]:
    """'lora, ia3,lora' -> ['lora', 'ia3'] (order kept); an unknown name lists the known ones."""
    from deltatune.methods.registry import METHODS

    names = list(dict.fromkeys(n.strip() for n in (text or "").split(",") if n.strip()))
    if not names:
        raise DeltatuneError(f"--methods: give a comma-separated list, e.g. --methods lora,ia3,bitfit "
                             f"(known: {', '.join(METHODS)})")
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise DeltatuneError(f"--methods: unknown method{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                             f"known: {', '.join(METHODS)}")
    return names


def parse_per_method(items: list[str] | None, methods: list[str]) -> dict[str, list[str]]:
    """['ia3:train.lr=0.05'] -> {'ia3': ['train.lr=0.05']}; the method must be one compared."""
    out: dict[str, list[str]] = {}
    for item in items or []:
        method, sep, override = item.partition(":")
        if not sep or "=" not in override:
            raise DeltatuneError(f"--set {item!r}: expected METHOD:section.key=value, e.g. --set ia3:train.lr=0.05")
        if method not in methods:
            raise DeltatuneError(f"--set {item!r}: {method!r} is not among --methods ({', '.join(methods)})")
        out.setdefault(method, []).append(override)
    return out


def method_settings(base: dict, config_path: Path, method: str, search: list[Path]) -> MethodSettings:
    """Where `method`'s `method:` section and lr come from (see the module docstring)."""
    own = base.get("method") if isinstance(base.get("method"), dict) else {"name": "lora"}
    if own.get("name", "lora") == method:
        return MethodSettings(method, copy.deepcopy(own), None, "base config")
    recipe = base.get("recipe", "sft")
    for folder in search:
        for stem in dict.fromkeys((f"{recipe}_{method}", f"sft_{method}")):
            path = folder / f"{stem}.yaml"
            if path.is_file() and path.resolve() != config_path.resolve():
                raw = read_yaml(path)
                section = raw.get("method")
                if not isinstance(section, dict) or section.get("name") != method:
                    continue  # a file of that name for another method: not a ready config of this one
                lr = (raw.get("train") or {}).get("lr")
                return MethodSettings(method, section, float(lr) if lr is not None else None, str(path))
    return MethodSettings(method, {"name": method}, None, "method defaults")


def search_dirs(config_path: Path, method_configs: str | None) -> list[Path]:
    dirs = [Path(method_configs)] if method_configs else []
    if method_configs and not dirs[0].is_dir():
        raise DeltatuneError(f"--method-configs {method_configs}: not a directory")
    return list(dict.fromkeys(d.resolve() for d in dirs + [config_path.parent, REPO_CONFIGS] if d.is_dir()))


def make_plan(config: str, methods: str, seeds: int = 1, out: str | None = None, overrides: list[str] | None = None,
              per_method: list[str] | None = None, method_configs: str | None = None) -> Plan:
    """Every run's validated config; raises DeltatuneError (naming method and key) before anything
    is written when a method is unknown or any run's config is invalid."""
    names = parse_methods(methods)
    if seeds < 1:
        raise DeltatuneError(f"--seeds {seeds}: at least 1")
    overrides = list(overrides or [])
    if any(o.split("=", 1)[0].strip() == "output.dir" for o in overrides):
        raise DeltatuneError("output.dir is set per run by compare (OUT/runs/<method>-seed<k>): use --out DIR")
    config_path = Path(config)
    base = read_yaml(config_path)
    out_dir = Path(out) if out else Path("runs") / f"compare-{config_path.stem}"
    extra = parse_per_method(per_method, names)
    folders = search_dirs(config_path, method_configs)
    plan = Plan(str(config_path), out_dir, names, [], overrides, extra,
                {m: method_settings(base, config_path, m, folders) for m in names})
    for method in names:
        settings = plan.settings[method]
        raw = copy.deepcopy(base)
        raw["method"] = copy.deepcopy(settings.section)
        if settings.lr is not None:
            raw.setdefault("train", {})["lr"] = settings.lr
        for item in overrides + extra.get(method, []):
            apply_override(raw, item)
        first_seed = int((raw.get("train") or {}).get("seed", 0) or 0)
        plan.seeds = [first_seed + k for k in range(seeds)]
        for seed in plan.seeds:
            raw_run = copy.deepcopy(raw)
            raw_run.setdefault("train", {})["seed"] = seed
            raw_run.setdefault("output", {})["dir"] = str(out_dir / "runs" / f"{method}-seed{seed}")
            source = f"{config_path} as compared with method {method} ({settings.source})"
            try:
                cfg = validate_config(raw_run, source=source)
            except DeltatuneError as err:
                raise DeltatuneError(f"{err}\n(nothing was trained; an override meant for some methods only goes in "
                                     f"--set METHOD:section.key=value, once per method)") from None
            plan.runs.append(PlannedRun(method, seed, cfg))
    return plan
