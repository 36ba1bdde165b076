"""RUN_DIR/report.html: written by `train` at the end of a run, rewritten by `deltatune report`,
its numbers the run's own; any recipe's run dir (or a half-finished one) renders without a crash.

    .venv/bin/pytest tests/reports/test_run_page.py
"""

from __future__ import annotations

import json
import re

import pytest
from tiny_runs import measured_raw, use_stand_in_replies

from deltatune.cli import main
from deltatune.config import validate_config
from deltatune.recipes import sft
from deltatune.reports import html as h
from deltatune.reports.run_files import train_wall_seconds
from deltatune.reports.run_page import write_run_page


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, tiny_llama_dir):
    """One measured sft run on the tiny Llama (probe greedy + sampled, KL, test split)."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("run-page")
    use_stand_in_replies(mp, root / "home")
    try:
        yield sft.run(validate_config(measured_raw(root, tiny_llama_dir, root / "run", steps=4)))
    finally:
        mp.undo()


def _svg(page: str, chart_id: str) -> str:
    match = re.search(rf'<svg[^>]*\bid="{chart_id}"[^>]*>.*?</svg>', page, re.S)
    assert match, f"no <svg id={chart_id}>"
    return match.group(0)


def test_train_writes_the_report_with_its_charts(sft_run):
    page = (sft_run / "report.html").read_text()
    for chart in ("chart-loss", "chart-lr", "chart-throughput"):
        svg = _svg(page, chart)
        assert 'role="img"' in svg and "aria-label=" in svg
        assert re.search(r'<g id="%s-line2d_\d+">\s*<path' % chart, svg), f"{chart} has no curve"
    # no element id is used twice (matplotlib's own ids are prefixed per chart)
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    # self-contained: nothing fetched from elsewhere
    assert not re.search(r"<script|<link|<img|\bsrc=|href=\"(?!#)", page)


def test_the_page_shows_the_runs_own_numbers(sft_run):
    page = (sft_run / "report.html").read_text()
    report = json.loads((sft_run / "eval.json").read_text())
    trainable = report["parameters"]["trainable"]
    assert f"{trainable:,}" in page
    assert f"{report['resources']['tokens_per_s']:,.0f}" in page
    # every split's measures, before vs after, in the eval table
    table = re.search(r'<table id="eval-table">.*?</table>', page, re.S).group(0)
    for split in ("test", "probe", "val", "forgetting"):
        assert f"<td>{split}" in table
    assert "sampled_contains" in table and ">kl<" in table
    # the three forgetting measures
    forgetting = re.search(r'<section id="forgetting">.*?</section>', page, re.S).group(0)
    assert "probe, greedy" in forgetting and "probe, sampled" in forgetting and "KL from the base" in forgetting
    assert f"{report['forgetting']['kl']:.4g}" in forgetting
    # sample generations: a question and the tuned reply from eval.json, escaped
    example = report["after"]["test"]["examples"][0]
    examples = re.search(r'<section id="examples">.*?</section>', page, re.S).group(0)
    assert h.escape(example["question"]) in examples and h.escape(example["prediction"]) in examples
    assert 'id="config"' in page and "recipe: sft" in page


def test_deltatune_report_rewrites_the_page(sft_run, capsys):
    (sft_run / "report.html").unlink()
    assert main(["report", str(sft_run)]) == 0
    assert (sft_run / "report.html").is_file() and "report.html" in capsys.readouterr().out


def test_not_a_run_dir_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a deltatune run dir" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2


def test_a_failing_report_never_fails_a_finished_run(tmp_path, tiny_llama_dir, monkeypatch, capsys):
    import deltatune.reports.run_page as run_page

    use_stand_in_replies(monkeypatch, tmp_path / "home")
    monkeypatch.setattr(run_page, "render", lambda run: 1 / 0)
    raw = measured_raw(tmp_path, tiny_llama_dir, tmp_path / "run", steps=1)
    raw["eval"] = {"before_after": False}
    run_dir = sft.run(validate_config(raw))
    assert json.loads((run_dir / "eval.json").read_text())["after"]
    assert not (run_dir / "report.html").exists()
    assert "report.html skipped: ZeroDivisionError" in capsys.readouterr().out


def _write(run_dir, config=None, eval_json=None, metrics=None):
    run_dir.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (run_dir / "config.yaml").write_text(config)
    if eval_json is not None:
        (run_dir / "eval.json").write_text(json.dumps(eval_json))
    if metrics is not None:
        (run_dir / "metrics.jsonl").write_text(metrics)
    return run_dir


def test_every_recipe_shape_renders_and_missing_pieces_are_left_out(tmp_path):
    # only a config: an unfinished run that never logged a step
    page = write_run_page(_write(tmp_path / "bare", config="recipe: pt\nmethod: {name: full}\n")).read_text()
    assert "not finished" in page and "<svg" not in page and 'id="eval"' not in page
    # interrupted: eval.json holds only the base's numbers; a half-written last metrics line; NaN as text
    rows = [{"event": "train", "step": 1, "loss": 2.0, "lr": 1e-3, "tokens_per_s": 10.0, "time": 100.0},
            {"event": "train", "step": 2, "loss": "nan", "lr": 1e-3, "time": 101.0}]
    half = "".join(json.dumps(r) + "\n" for r in rows) + '{"event": "train", "st'
    page = write_run_page(_write(tmp_path / "cut", config="recipe: sft\n", eval_json={"before": {"val": {"loss": 3.0}}},
                                 metrics=half)).read_text()
    assert 'id="chart-loss"' in page and "not finished" in page
    # reward model / DPO: other measure names, any numeric one is shown
    rm = {"before": {"val": {"pairwise_accuracy": 0.5, "n": 8}}, "after": {"val": {"pairwise_accuracy": 0.75,
          "mean_margin": 0.3, "n": 8}, "test": {"reward_accuracy": 0.6, "new_metric": {"f1": 0.4}}},
          "resources": {"peak_rss_mib": 900.0}, "method_report": {"ranks": {"q": 3}}}
    page = write_run_page(_write(tmp_path / "rm", config="recipe: rm\n", eval_json=rm)).read_text()
    assert "pairwise_accuracy" in page and "mean_margin" in page and "new_metric.f1" in page
    assert "75.0%" in page and "+25.0 pts" in page and 'id="method-report"' in page and "900 MiB" in page
    # RL: per-iteration `rl` rows and a mean reward on held-out prompts with reply examples
    rl_rows = "".join(json.dumps({"event": "rl", "step": i, "reward_mean": 0.1 * i, "kl": 0.01 * i, "time": i})
                      + "\n" for i in range(1, 5))
    rl = {"before": {"test": {"mean_reward": 0.2, "n": 2}}, "after": {"test": {"mean_reward": 0.5, "n": 2,
          "examples": [{"prompt": "Say <red>", "reply": "red & <b>bold</b>", "reward": 1.0}]}}, "steps": 4}
    page = write_run_page(_write(tmp_path / "rl", config="recipe: grpo\n", eval_json=rl, metrics=rl_rows)).read_text()
    assert 'id="chart-rl-reward-mean"' in page and 'id="chart-rl-kl"' in page
    assert "red &amp; &lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold</b>" not in page
    # garbage files: a note on the page, never a crash
    bad = _write(tmp_path / "bad", config="recipe: [", eval_json=None, metrics="not json\n")
    page = write_run_page(bad).read_text()
    assert "config.yaml is not valid YAML" in page


def test_training_wall_time_counts_each_start_not_the_gap_between():
    rows = [{"event": "budget", "time": 0.0}, {"event": "train", "time": 10.0}, {"event": "train", "time": 12.0},
            {"event": "resume", "time": 1000.0}, {"event": "train", "time": 1005.0}, {"event": "end", "time": 1006.0}]
    assert train_wall_seconds(rows) == 12.0 + 6.0
    assert train_wall_seconds([]) is None
