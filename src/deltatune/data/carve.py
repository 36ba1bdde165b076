"""A validation split carved from the training records when the user gives none.

    train, val = carve_validation(records, share=0.1, seed=0)   # val None: too few rows

Every run should have a held-out signal (early stopping, best-weights restore, "did it learn?"),
but users often pass only `data.train`. Then `data.val_split` of the training records (whole
records, chosen by a seeded shuffle, at least one) are held out: never trained on, used for the
validation loss. Fewer than MIN_ROWS records leave nothing to spare: training uses them all and
the run says that nothing held out was measured.
"""

from __future__ import annotations

import math
import random

MIN_ROWS = 10


def carve_validation(records: list[dict], share: float, seed: int) -> tuple[list[dict], list[dict] | None]:
    """(training records, held-out records or None when `share` is 0 or there are < MIN_ROWS)."""
    if share <= 0 or len(records) < MIN_ROWS:
        return records, None
    k = max(1, math.floor(share * len(records)))
    held = set(random.Random(seed).sample(range(len(records)), k))
    train = [r for i, r in enumerate(records) if i not in held]
    val = [r for i, r in enumerate(records) if i in held]
    return train, val
