"""How well a linear probe on a frozen model's features ranks preference pairs: the control for
`recipe: rm` (what the reward head could reach without moving the model), for both readings
of a sequence (`preference.reward_pooling`: last token, answer mean).

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/measure_reward_probe.py [--model smollm2-135m | runs/<sft-run>]
        [--train builtin:orgfacts/prefs_train] [--test builtin:orgfacts/prefs_test] [--batch-size 8]

One no-grad forward per pair batch gives both poolings' features; the probe is
`deltatune.preference.head_init.fit_probe` (the fit `preference.head_init: probe` uses), fitted
on the training pairs; prints train and held-out pairwise accuracy per pooling.
"""

from __future__ import annotations

import argparse

import torch

from deltatune.config import load_config
from deltatune.data.preference import collate_pairs
from deltatune.forward import decoder_hidden
from deltatune.models.heads import answer_mean_hidden, last_positions
from deltatune.preference.forward import halves
from deltatune.preference.head_init import fit_probe
from deltatune.preference.splits import load_pair_splits
from deltatune.recipes import common

POOLINGS = ("last", "answer_mean")


@torch.no_grad()
def features(model, pairs, batch_size: int, pad_id: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{pooling: ((N, H) chosen, (N, H) rejected)} from one forward per batch."""
    parts = {p: ([], []) for p in POOLINGS}
    for start in range(0, len(pairs), batch_size):
        batch = collate_pairs([pairs[i] for i in range(start, min(len(pairs), start + batch_size))], pad_id)
        hidden, _ = decoder_hidden(model, batch["input_ids"], batch["attention_mask"])
        rows = torch.arange(hidden.shape[0])
        pooled = {"last": hidden[rows, last_positions(batch["attention_mask"])],
                  "answer_mean": answer_mean_hidden(hidden, batch["attention_mask"], batch["labels"])}
        for name, x in pooled.items():
            c, r = halves(x.float())
            parts[name][0].append(c)
            parts[name][1].append(r)
    return {name: (torch.cat(c), torch.cat(r)) for name, (c, r) in parts.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m", help="a model name or a finished run dir")
    ap.add_argument("--train", default="builtin:orgfacts/prefs_train")
    ap.add_argument("--test", default="builtin:orgfacts/prefs_test")
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(2)
    # data.val stays the config's own split: without one, the pair loader would carve it from --train
    cfg = load_config("configs/smollm2/rm_lora.yaml", [f"model.name={args.model}", f"data.train={args.train}",
                                                       f"data.test={args.test}"])
    model, tokenizer = common.load_for_training(cfg)
    model.eval()
    splits = load_pair_splits(cfg, tokenizer)
    train = features(model, splits.train, args.batch_size, tokenizer.pad_token_id)
    test = features(model, splits.test, args.batch_size, tokenizer.pad_token_id)
    print(f"model {args.model}: {len(splits.train)} training pairs, {len(splits.test)} held-out pairs")
    for name in POOLINGS:
        weight, bias, train_acc = fit_probe(*train[name])
        c, r = test[name]
        held_out = float(((c - r) @ weight > 0).float().mean())
        print(f"  {name:12s} probe: train {train_acc:.1%}, held-out {held_out:.1%}")


if __name__ == "__main__":
    main()
