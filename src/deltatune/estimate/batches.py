"""The batches a run will train on, without a model: the project's own data path, then the
sampler's micro-batch stream over the run's budget.

    plan = plan_batches(cfg, tokenizer)
    plan.peak_examples      # the micro-batch with the most (padded) token cells: it sets the peak
    plan.mean               # per-micro-batch means over the whole run: they set the step time
    plan.budget.total_steps

The training set is what the recipe builds (`recipes.sft.load_datasets` / `recipes.pt.
load_datasets`: the same records, validation carving, chat template, masking and truncation).
Replay (`data.replay`) is the base model's answers: the cached ones when the estimate can find
them, else stand-ins at the answer cap (`estimate.replay`), chosen, cut, weighted and given
teacher targets as the recipe does, so the collated batches have the same tensors.

The micro-batch stream is the loop's: `BucketedBatches` epoch after epoch for
`total_steps x grad_accum` micro-batches (`train.packing`: one row of the batch's real tokens).
"""

from __future__ import annotations

import dataclasses

from deltatune.data import BucketedBatches, TokenizedDataset
from deltatune.data.labels import IGNORE_INDEX
from deltatune.errors import DeltatuneError
from deltatune.estimate.model_info import quiet
from deltatune.training.budget import Budget, plan_budget, train_batch_size

MAX_SIMULATED_EPOCHS = 64  # the stream repeats epoch after epoch; beyond this the means are stable
SUPPORTED_RECIPES = ("sft", "pt")


@dataclasses.dataclass
class BatchStats:
    """One micro-batch (or the mean of many): rows, padded width, token cells the layers see,
    labelled positions the head sees, real tokens, and sum of rows' attention lengths squared."""

    rows: float
    width: float
    cells: float
    labelled: float
    tokens: float
    attention: float  # sum over rows of T^2 (padded rows: width^2; packed: each example's own)

    def as_dict(self) -> dict:
        return {k: round(v, 1) for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass
class BatchPlan:
    n_user: int  # the user's training examples (what sizes the budget)
    n_replay: int  # replay stand-ins among the training examples (repeats included)
    batch_size: int
    grad_accum: int
    budget: Budget
    peak_examples: list[dict]  # the peak micro-batch's examples, as collate takes them
    peak: BatchStats
    mean: BatchStats
    micro_batches: int  # simulated (the whole run, or MAX_SIMULATED_EPOCHS epochs)
    notes: list[str]
    dataset: TokenizedDataset  # user examples + replay (for re-planning other batch sizes)


def training_examples(cfg, tokenizer) -> tuple[TokenizedDataset, list[str]]:
    """The training set the recipe would build, replay included (module docstring)."""
    if cfg.recipe not in SUPPORTED_RECIPES:
        raise DeltatuneError(f"deltatune estimate covers recipes {', '.join(SUPPORTED_RECIPES)}; this config's "
                             f"recipe is {cfg.recipe!r}")
    with quiet():  # the recipe's own notes are printed again when it runs
        if cfg.recipe == "pt":
            from deltatune.recipes import pt

            return pt.load_datasets(cfg, tokenizer)[0], []
        from deltatune.recipes import sft

        plain = cfg.model_copy(update={"data": cfg.data.model_copy(update={
            "replay": None, "replay_topk": 0, "replay_weight": 1.0, "replay_answer_tokens": None})})
        train_set = sft.load_datasets(plain, tokenizer).train
    if not cfg.data.replay:
        return train_set, []
    from deltatune.estimate.replay import replay_examples

    replay, notes, unanswered = replay_examples(cfg, tokenizer, train_set)
    stats = dict(train_set.stats, replay=len(replay), replay_unanswered=unanswered)
    return TokenizedDataset(train_set.examples + replay, stats), notes


def plan_batches(cfg, dataset: TokenizedDataset, notes: list[str] | None = None,
                 batch_size: int | None = None, grad_accum: int | None = None) -> BatchPlan:
    """The run's micro-batch stream over `dataset` (module docstring); `batch_size` /
    `grad_accum` replace the config's (the estimate's what-if suggestions)."""
    train_cfg = cfg.train
    if batch_size is not None or grad_accum is not None:
        train_cfg = train_cfg.model_copy(update={"batch_size": batch_size or train_cfg.batch_size,
                                                 "grad_accum": grad_accum or train_cfg.grad_accum})
    n_replay = int((dataset.stats or {}).get("replay", 0))
    n_user = len(dataset) - n_replay
    size = train_batch_size(train_cfg, n_user)
    sampler = BucketedBatches(dataset, size, seed=train_cfg.seed)
    budget = plan_budget(train_cfg, n_user, len(sampler), size)
    packed = bool(getattr(train_cfg, "packing", False))
    lengths = sampler.lengths
    labels = [sum(1 for label in ex["labels"][1:] if label != IGNORE_INDEX) for ex in dataset.examples]
    wanted = budget.total_steps * train_cfg.grad_accum
    peak_key, peak, sums, seen = None, None, [0.0] * 6, 0
    for epoch in range(MAX_SIMULATED_EPOCHS):
        for indices in sampler.batches(epoch):
            stats = batch_stats(indices, lengths, labels, packed)
            key = (stats.cells, stats.labelled)
            if peak_key is None or key > peak_key:
                peak_key, peak = key, (indices, stats)
            sums = [s + v for s, v in zip(sums, dataclasses.astuple(stats))]
            seen += 1
            if seen >= wanted:
                break
        if seen >= wanted:
            break
    mean = BatchStats(*(s / seen for s in sums))
    return BatchPlan(n_user, n_replay, size, train_cfg.grad_accum, budget, [dataset[i] for i in peak[0]], peak[1],
                     mean, seen, list(notes or []), dataset)


def batch_stats(indices: list[int], lengths: list[int], labels: list[int], packed: bool) -> BatchStats:
    rows = [lengths[i] for i in indices]
    tokens = sum(rows)
    labelled = sum(labels[i] for i in indices)
    if packed:  # one row of real tokens; attention stays inside each example
        return BatchStats(1, tokens, tokens, labelled, tokens, sum(n * n for n in rows))
    width = max(rows)
    return BatchStats(len(rows), width, len(rows) * width, labelled, tokens, len(rows) * width * width)
