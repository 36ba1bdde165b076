"""Report formatting: the before/after table, atomic eval.json, the loss-curve plot."""

import json

from deltatune.eval.report import (
    comparison_table,
    eval_payload,
    plot_loss_curve,
    read_loss_points,
    write_eval_json,
)

BEFORE = {"test": {"exact_match": 0.1, "contains": 0.25, "n": 40}, "val": {"loss": 2.5, "perplexity": 12.18249}}
AFTER = {"test": {"exact_match": 0.5, "contains": 0.725, "n": 40}, "val": {"loss": 1.25, "perplexity": 3.490343}}


def test_comparison_table_exact_text():
    expected = "\n".join(
        [
            "metric                    base  tuned      delta",
            "-----------------------  -----  -----  ---------",
            "test/exact_match (n=40)  10.0%  50.0%  +40.0 pts",
            "test/contains (n=40)     25.0%  72.5%  +47.5 pts",
            "val/loss                 2.500  1.250     -1.250",
            "val/perplexity           12.18   3.49      -8.69",
        ]
    )
    table = comparison_table(BEFORE, AFTER)
    assert table == expected
    assert len({len(line) for line in table.splitlines()}) == 1  # every line the same width


def test_table_without_before_has_one_value_column():
    table = comparison_table(None, AFTER, tuned_label="model")
    assert table.splitlines()[0].split() == ["metric", "model"]
    assert "test/contains (n=40)     72.5%" in table.splitlines()


def test_missing_metric_shows_dash():
    table = comparison_table({"probe": {"contains": 0.9, "n": 10}}, {"probe": {"contains": 0.85, "n": 10}, "val": {"loss": 1.0}})
    assert "val/loss                   -  1.000         -" in table.splitlines()
    assert "-5.0 pts" in table


def test_write_eval_json_atomic(tmp_path):
    path = write_eval_json(tmp_path / "sub" / "eval.json", eval_payload(AFTER, BEFORE, target="runs/x"))
    assert json.loads(path.read_text()) == {"target": "runs/x", "before": BEFORE, "after": AFTER}
    assert [p.name for p in path.parent.iterdir()] == ["eval.json"]  # no temp file left behind


def test_plot_loss_curve(tmp_path):
    lines = [  # as deltatune.training.metrics.MetricsLog writes them
        {"event": "train", "step": 1, "loss": 3.0, "lr": 1e-4},
        {"event": "train", "step": 2, "loss": 2.5},
        {"event": "val", "step": 2, "val_loss": 2.7, "best_val_loss": 2.7},
        {"event": "train", "step": 3, "loss": 2.0},
        {"event": "nan_stop", "step": 4, "loss": "nan"},
        {"event": "val", "step": 3, "val_loss": 2.2},
        {"event": "end", "step": 3, "val_loss": 2.2},
        {"step": 5, "loss": 1.5},  # rows without `event`: plain heuristics
        {"step": 5, "eval_loss": 1.9},
    ]
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("\n".join(json.dumps(x) for x in lines) + '\n{"step": 4, "lo')  # torn last line
    assert read_loss_points(metrics) == ([(1, 3.0), (2, 2.5), (3, 2.0), (5, 1.5)], [(2, 2.7), (3, 2.2), (5, 1.9)])
    out = plot_loss_curve(metrics, tmp_path / "loss.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sampled_probe_row_counts_questions_times_samples():
    before = {"probe": {"contains": 1.0, "sampled_contains": 0.774, "samples": 10, "n": 50}}
    after = {"probe": {"contains": 0.92, "sampled_contains": 0.784, "samples": 10, "n": 50}}
    rows = comparison_table(before, after).splitlines()
    assert rows[2].split() == ["probe/contains", "(n=50)", "100.0%", "92.0%", "-8.0", "pts"]
    assert rows[3].split() == ["probe/sampled_contains", "(n=50x10)", "77.4%", "78.4%", "+1.0", "pts"]
