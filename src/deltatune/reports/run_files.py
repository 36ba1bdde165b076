"""Read what a training run left in its run dir, defensively: every piece may be missing.

    run = read_run("runs/smollm2-sft-lora")
    run.eval["after"]["test"]["contains"], run.rows("train"), train_wall_seconds(run.metrics)

A run of any recipe (sft, pt, rm, dpo, ppo, grpo), an interrupted one (eval.json holding only
`before`), or one written by an older deltatune has some of config.yaml, metrics.jsonl,
eval.json and adapter/; what cannot be read becomes a note in `problems`, never an error —
reports show what there is. The numbers here are the files' own: nothing is recomputed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from deltatune.errors import DeltatuneError

RUN_FILES = ("config.yaml", "eval.json", "metrics.jsonl")
# keys of an eval split that count things rather than measure quality
META_KEYS = {"n", "seconds", "tokens", "samples"}
# the test metric a comparison ranks by: the first of these a split has (all higher-is-better)
PRIMARY_METRICS = ("contains", "exact_match", "accuracy", "macro_f1", "token_f1", "rouge_l", "chrf", "bleu",
                   "mc_accuracy", "reward_accuracy", "pairwise_accuracy", "mean_reward")
LOWER_IS_BETTER = ("loss", "perplexity", "kl", "nll", "majority")


@dataclass
class RunFiles:
    run_dir: Path
    config: dict | None = None  # config.yaml as a mapping (not re-validated: old runs still render)
    config_text: str | None = None
    eval: dict = field(default_factory=dict)  # eval.json ({} when absent)
    metrics: list[dict] = field(default_factory=list)  # metrics.jsonl rows, unreadable lines skipped
    problems: list[str] = field(default_factory=list)

    def rows(self, event: str) -> list[dict]:
        return [r for r in self.metrics if r.get("event") == event]

    def section(self, *keys: str):
        """config[keys[0]][keys[1]]..., or None."""
        node = self.config
        for key in keys:
            if not isinstance(node, dict):
                return None
            node = node.get(key)
        return node

    @property
    def finished(self) -> bool:
        """eval.json holds the tuned model's numbers (`after`): the recipe got to its end."""
        return isinstance(self.eval.get("after"), dict)


def read_run(run_dir: str | Path) -> RunFiles:
    """The run dir's files; DeltatuneError only when it is no run dir at all."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DeltatuneError(f"{run_dir}: no such directory (give the run dir a training run wrote: its output.dir)")
    if not any((run_dir / name).is_file() for name in RUN_FILES):
        raise DeltatuneError(f"{run_dir} is not a deltatune run dir: it has none of {', '.join(RUN_FILES)}")
    run = RunFiles(run_dir)
    path = run_dir / "config.yaml"
    if path.is_file():
        run.config_text = path.read_text(encoding="utf-8", errors="replace")
        try:
            loaded = yaml.safe_load(run.config_text)
            run.config = loaded if isinstance(loaded, dict) else None
        except yaml.YAMLError as err:
            run.problems.append(f"config.yaml is not valid YAML: {err}")
    path = run_dir / "eval.json"
    if path.is_file():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
            run.eval = loaded if isinstance(loaded, dict) else {}
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            run.problems.append(f"eval.json is not valid JSON: {err}")
    path = run_dir / "metrics.jsonl"
    if path.is_file():
        run.metrics = read_rows(path)
    return run


def read_rows(path: Path) -> list[dict]:
    """metrics.jsonl rows; a half-written last line (a live run) or a foreign line is skipped."""
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def number(value) -> float | None:
    """A finite real number, else None (bools, strings, NaN written as "nan", None)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def split_metrics(split) -> dict[str, float]:
    """Every numeric measure of one eval split, one nested level flattened ("a.b"); counts
    (n, seconds, tokens, samples) left out. New metric keys show up here as they appear."""
    out: dict[str, float] = {}
    if not isinstance(split, dict):
        return out
    for key, value in split.items():
        if key in META_KEYS:
            continue
        if isinstance(value, dict):
            for sub, inner in value.items():
                if number(inner) is not None and sub not in META_KEYS:
                    out[f"{key}.{sub}"] = number(inner)
        elif number(value) is not None:
            out[key] = number(value)
    return out


def higher_is_better(metric: str) -> bool:
    return not any(word in metric for word in LOWER_IS_BETTER)


def primary_metric(split) -> str | None:
    """The test metric a comparison ranks by: the first of PRIMARY_METRICS present, else the
    split's first numeric measure."""
    found = split_metrics(split)
    for name in PRIMARY_METRICS:
        if name in found:
            return name
    return next(iter(found), None)


def series(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of `key` over `rows`, non-numeric values skipped."""
    xs, ys = [], []
    for row in rows:
        step, value = number(row.get("step")), number(row.get(key))
        if step is not None and value is not None:
            xs.append(step)
            ys.append(value)
    return xs, ys


def train_wall_seconds(rows: list[dict]) -> float | None:
    """Wall-clock seconds of the training loop (validation included, the base's and the final
    evaluation not), from the rows' `time` stamps: first row to the last of each start, a
    `resume` row beginning a new start (the time between two starts is not counted)."""
    total, start, last = 0.0, None, None
    for row in rows:
        stamp = number(row.get("time"))
        if stamp is None:
            continue
        if row.get("event") == "resume" and start is not None:
            total += last - start
            start = None
        if start is None:
            start = stamp
        last = stamp
    if start is None:
        return None
    return round(total + (last - start), 2)


def adapter_bytes(run_dir: Path) -> int | None:
    """Bytes on disk of RUN_DIR/adapter (what serving or sharing the run costs), or None."""
    folder = Path(run_dir) / "adapter"
    if not folder.is_dir():
        return None
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def peak_memory_mib(resources) -> tuple[float | None, str]:
    """(MiB, what it is): the CUDA tensors' peak when the run used a GPU, else the training
    phase's resident peak, else the process's lifetime peak."""
    if not isinstance(resources, dict):
        return None, ""
    for key, what in (("cuda_peak_allocated_mib", "CUDA peak allocated"),
                      ("train_peak_rss_mib", "peak RSS while training"), ("peak_rss_mib", "process peak RSS")):
        if number(resources.get(key)) is not None:
            return number(resources[key]), what
    return None, ""
