"""A finished `recipe: rm` run as a scorer: the reward of an answer to a prompt.

    rm = RewardModel.load("runs/rm")                     # base + adapter + reward_head
    rm.score([("Who founded Acme?", "Ada Lovelace founded Acme.")])     # [1.73]
    check_reward_run("runs/sft")    # DeltatuneError: not a reward model (before any sampling)

Texts are rendered exactly as training rendered the pairs (chat template, the run's system
prompt, the answer ending on its end token), so a score here is the score training optimised.
"""

from __future__ import annotations

from pathlib import Path

import torch

from deltatune.data.batching import collate
from deltatune.data.tokenize import encode_conversation, with_system_prompt
from deltatune.errors import DeltatuneError
from deltatune.models.device import model_device
from deltatune.models.heads import load_head, reward_scores

HEAD = "reward_head"
HEAD_FILE = "reward_head.safetensors"


def check_reward_run(run_dir: str | Path) -> Path:
    """`run_dir` as a Path when it is a finished reward-model run, else a DeltatuneError saying why."""
    from deltatune.config import load_run_config
    from deltatune.models.runs import is_run_dir

    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        raise DeltatuneError(f"{run_dir} is not a deltatune run dir (no config.yaml): a reward must be a run dir "
                             f"of `recipe: rm`, or one of contains / exact / python:module:function")
    recipe = load_run_config(run_dir).recipe
    if recipe != "rm" or not (run_dir / HEAD_FILE).is_file():
        what = f"a `recipe: {recipe}` run" if recipe != "rm" else "an unfinished reward-model run"
        raise DeltatuneError(f"{run_dir} is {what}, not a trained reward model (no {HEAD_FILE}); train one with "
                             f"`recipe: rm` and point at its run dir")
    return run_dir


class RewardModel:
    """Scores (prompt, answer) pairs with a trained reward model (see module docstring)."""

    def __init__(self, model, tokenizer, head, system_prompt: str | None, max_length: int, pooling: str = "last"):
        self.model, self.tokenizer, self.head = model, tokenizer, head
        self.system_prompt, self.max_length, self.pooling = system_prompt, max_length, pooling

    @classmethod
    def load(cls, run_dir: str | Path, device: str | None = None) -> "RewardModel":
        from deltatune.models.runs import load_target

        run_dir = check_reward_run(run_dir)
        loaded = load_target(str(run_dir), device=device)
        loaded.model.requires_grad_(False)
        head = load_head(loaded.model, run_dir / HEAD_FILE, HEAD)
        cfg = loaded.run_cfg
        return cls(loaded.model, loaded.tokenizer, head, cfg.data.system_prompt, cfg.data.max_length,
                   cfg.preference.reward_pooling)

    def encode(self, prompt, answer: str) -> tuple[list[int], list[int]]:
        """(token ids, labels) of the conversation (prompt: a string or message list) ending in
        `answer`; the labels mark the answer's tokens, as in training."""
        turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        conv = with_system_prompt([*turns, {"role": "assistant", "content": answer}], self.system_prompt)
        ids, labels = encode_conversation(self.tokenizer, conv)
        return ids[: self.max_length], labels[: self.max_length]

    @torch.no_grad()
    def score(self, pairs: list[tuple], batch_size: int = 16) -> list[float]:
        """The reward of each (prompt, answer), in order."""
        self.model.eval()
        out: list[float] = []
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(pairs), batch_size):
            encoded = [self.encode(prompt, answer) for prompt, answer in pairs[start:start + batch_size]]
            rows = [{"input_ids": ids, "labels": labels} for ids, labels in encoded]
            batch = {k: v.to(model_device(self.model)) for k, v in collate(rows, pad).items()}
            out += reward_scores(self.model, self.head, batch, self.pooling).tolist()
        return out
