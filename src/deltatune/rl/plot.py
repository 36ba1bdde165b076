"""rl.png: what an RL run did per iteration — reward, KL, entropy, clip fraction, reply length,
value loss — one panel each, from the `rl` rows of metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

PANELS = [("reward_mean", "mean reward"), ("kl", "KL to reference"), ("entropy", "entropy (nats/token)"),
          ("clip_fraction", "clip fraction"), ("response_length", "reply length (tokens)"),
          ("value_loss", "value loss")]


def plot_rl(metrics_jsonl: Path, out_png: Path, title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(metrics_jsonl).read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("event") == "rl"]
    panels = [(key, label) for key, label in PANELS if any(key in r for r in rows)]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(3.2 * max(len(panels), 1), 3), dpi=110, squeeze=False)
    try:
        for ax, (key, label) in zip(axes[0], panels):
            points = [(r["step"], r[key]) for r in rows if key in r]
            ax.plot(*zip(*points), linewidth=1.2)
            ax.set_title(label, fontsize=9)
            ax.set_xlabel("iteration", fontsize=8)
            ax.grid(alpha=0.3)
        fig.suptitle(title or Path(metrics_jsonl).parent.name, fontsize=10)
        fig.tight_layout()
        fig.savefig(out_png)
    finally:
        plt.close(fig)
    return Path(out_png)
