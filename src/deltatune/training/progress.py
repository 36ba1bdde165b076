"""Progress bar for the training loop: loss, lr, tokens/s; tqdm supplies rate and ETA.

    bar = progress_bar(total_steps, initial=start_step, desc="sft")
    show(bar, loss=1.2, lr=2e-4, tokens_per_s=900.0)
    bar.update(1)

Messages printed while the bar is live go through `say` so they do not tear the bar.
"""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


def progress_bar(total: int, initial: int = 0, desc: str = "train", enabled: bool = True, unit: str = "step") -> tqdm:
    # DELTATUNE_PROGRESS=0 silences the bar (CI logs); otherwise it draws on stderr. Off on
    # every process but rank 0 of a multi-process run.
    disable = os.environ.get("DELTATUNE_PROGRESS", "1") == "0" or not enabled
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True,
                disable=disable, file=sys.stderr)


def show(bar: tqdm, loss: float, lr: float, tokens_per_s: float) -> None:
    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_s:.0f}", refresh=False)


def say(message: str) -> None:
    """Print a line (between progress-bar redraws); only rank 0 speaks in a multi-process run."""
    if int(os.environ.get("RANK", "0")) == 0:
        tqdm.write(message)
