"""`deltatune compare` end to end on the tiny Llama: each method trains on the same data and budget
with its own learning rate, the report's numbers are each run's own, a rerun reuses finished runs
and resumes interrupted ones, a crashing method is marked failed while the others complete, and a
bad method list or config fails before any run starts.

    .venv/bin/pytest tests/compare/test_compare.py
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml
from tiny_runs import measured_raw, use_stand_in_replies

from deltatune.cli import main
from deltatune.compare import compare, plan as plan_module
from deltatune.compare.runner import train_one
from deltatune.compare.summary import aggregate

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "smollm2"


@pytest.fixture(scope="module")
def base_config(tmp_path_factory, tiny_llama_dir):
    """A measured tiny sft config (method lora) as a YAML file; the stand-in base replies on."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("compare")
    use_stand_in_replies(mp, root / "home")
    path = root / "base.yaml"
    path.write_text(yaml.safe_dump(measured_raw(root, tiny_llama_dir, root / "unused", steps=4)))
    try:
        yield path
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def three_methods(base_config):
    out = base_config.parent / "cmp3"
    code = main(["compare", str(base_config), "--methods", "lora,ia3,bitfit", "--out", str(out), "train.max_steps=3",
                 "--in-process"])
    assert code == 0
    return out


def _eval(run_dir) -> dict:
    return json.loads((Path(run_dir) / "eval.json").read_text())


def test_each_method_runs_with_its_own_lr_and_the_shared_overrides(three_methods, base_config):
    report = json.loads((three_methods / "report.json").read_text())
    assert [r["name"] for r in report["runs"]] == ["lora-seed0", "ia3-seed0", "bitfit-seed0"]
    lrs = {}
    for run in report["runs"]:
        saved = yaml.safe_load((Path(run["run_dir"]) / "config.yaml").read_text())
        assert saved["method"]["name"] == run["method"] and saved["train"]["max_steps"] == 3  # k=v: every run
        assert _eval(run["run_dir"])["steps"] == 3
        lrs[run["method"]] = saved["train"]["lr"]
    assert lrs["lora"] == 1e-2  # the base config's own
    for method in ("ia3", "bitfit"):  # the ready YAML's
        ready = yaml.safe_load((REPO_CONFIGS / f"sft_{method}.yaml").read_text())
        assert lrs[method] == ready["train"]["lr"]
        assert report["method_settings"][method]["source"].endswith(f"sft_{method}.yaml")


def test_the_report_numbers_are_each_runs_own(three_methods):
    report = json.loads((three_methods / "report.json").read_text())
    for run in report["runs"]:
        ev, measures = _eval(run["run_dir"]), run["measures"]
        assert run["status"] == "finished"
        assert measures["trainable_params"] == ev["parameters"]["trainable"]
        params = ev["parameters"]
        assert measures["trainable_pct"] == pytest.approx(100 * params["trainable"] / params["total"])
        assert measures["peak_memory_mib"] == ev["resources"]["train_peak_rss_mib"]
        assert measures["tokens_per_s"] == ev["resources"]["tokens_per_s"]
        assert measures["final_val_loss"] == ev["final_val_loss"]
        for name in ("probe_greedy_change", "probe_sampled_change", "kl"):
            assert measures[name] == ev["forgetting"][name]
        assert measures["test.contains"] == ev["after"]["test"]["contains"]
        assert measures["test.exact_match"] == ev["after"]["test"]["exact_match"]
        size = sum(p.stat().st_size for p in (Path(run["run_dir"]) / "adapter").rglob("*") if p.is_file())
        assert measures["adapter_bytes"] == size
        rows = [json.loads(line) for line in (Path(run["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
        assert measures["train_wall_s"] == pytest.approx(rows[-1]["time"] - rows[0]["time"], abs=0.01)
        summary = report["summary"][run["method"]]["measures"]
        kl = ev["forgetting"]["kl"]
        assert summary["kl"] == {"mean": kl, "std": None, "n": 1, "values": [kl]}
    md = (three_methods / "report.md").read_text()
    for run in report["runs"]:
        trainable = f"{run['measures']['trainable_params']:,.0f}"
        assert any(line.startswith(f"| {run['method']} |") and trainable in line for line in md.splitlines())
    page = (three_methods / "report.html").read_text()
    for chart in ("chart-loss-curves", "chart-quality-cost", "chart-quality-forgetting"):
        assert f'id="{chart}"' in page
    assert page.count('href="runs/') == 3  # each run's own report.html, linked


def test_a_rerun_reuses_finished_runs(three_methods, base_config):
    stamps = {p: p.stat().st_mtime_ns for p in three_methods.glob("runs/*/eval.json")}
    trained = []
    summary = compare(str(base_config), "lora,ia3,bitfit", out=str(three_methods), overrides=["train.max_steps=3"],
                      train_run=lambda run, resume: trained.append(run.name), on_progress=lambda line: None)
    assert trained == []
    assert {r["status"] for r in summary["runs"]} == {"reused"}
    assert {p: p.stat().st_mtime_ns for p in three_methods.glob("runs/*/eval.json")} == stamps
    # the same runs under another override are not silently mixed in
    with pytest.raises(Exception, match="another config"):
        compare(str(base_config), "lora", out=str(three_methods), overrides=["train.max_steps=2"],
                on_progress=lambda line: None)


def test_two_seeds_give_mean_and_spread(base_config):
    out = base_config.parent / "seeds"
    summary = compare(str(base_config), "lora", seeds=2, out=str(out), overrides=["train.max_steps=2"],
                      on_progress=lambda line: None, isolate=False)
    assert [r["name"] for r in summary["runs"]] == ["lora-seed0", "lora-seed1"]
    losses = [_eval(r["run_dir"])["final_val_loss"] for r in summary["runs"]]
    assert losses[0] != losses[1]  # the seeds differ (LoRA's init, the batch order)
    stat = summary["summary"]["lora"]["measures"]["final_val_loss"]
    assert stat["n"] == 2 and stat["mean"] == pytest.approx(statistics.fmean(losses))
    assert stat["std"] == pytest.approx(statistics.stdev(losses))
    assert [yaml.safe_load((Path(r["run_dir"]) / "config.yaml").read_text())["train"]["seed"]
            for r in summary["runs"]] == [0, 1]
    assert "± " in (out / "report.md").read_text() and "(n=2)" in (out / "report.md").read_text()


def test_a_crashing_method_is_failed_and_the_others_complete_then_an_interrupted_run_resumes(base_config, capsys):
    out = base_config.parent / "crash"
    # IA3 aimed at a module the model does not have: it fails when installed, lora does not
    code = main(["compare", str(base_config), "--methods", "ia3,lora", "--out", str(out), "train.max_steps=2",
                 "--set", "ia3:method.targets=[no_such_proj]", "--set", "ia3:method.feedforward=[]", "--in-process"])
    assert code == 1
    report = json.loads((out / "report.json").read_text())
    status = {r["method"]: r for r in report["runs"]}
    assert status["ia3"]["status"] == "failed" and "no_such_proj" in status["ia3"]["error"]
    assert status["lora"]["status"] == "finished" and _eval(status["lora"]["run_dir"])["after"]
    assert "## Failed runs" in (out / "report.md").read_text() and "no_such_proj" in (out / "report.html").read_text()
    assert "FAILED" in capsys.readouterr().out

    # lora interrupted after its last checkpoint (eval.json not yet written): the rerun resumes it
    lora_dir = Path(status["lora"]["run_dir"])
    (lora_dir / "eval.json").unlink()
    calls = []

    def spy(run, resume):
        calls.append((run.name, resume))
        return train_one(run, resume)

    summary = compare(str(base_config), "ia3,lora", out=str(out), overrides=["train.max_steps=2"],
                      per_method=["ia3:method.targets=[no_such_proj]", "ia3:method.feedforward=[]"],
                      train_run=spy, on_progress=lambda line: None)
    assert calls == [("ia3-seed0", False), ("lora-seed0", True)]  # the failed one is retried
    assert [r["status"] for r in summary["runs"]] == ["failed", "finished"]
    assert _eval(lora_dir)["after"] and _eval(lora_dir)["steps"] == 2


def test_by_default_each_run_trains_in_its_own_process(base_config, capsys, monkeypatch):
    """The default: `deltatune train` in a child per run. Training in this process is made to
    fail, so only a run trained elsewhere can finish; the failing method's error is the child's."""
    import deltatune.recipes.sft as sft

    def not_here(*args, **kwargs):
        raise AssertionError("trained in the compare's own process")

    monkeypatch.setattr(sft, "run", not_here)
    out = base_config.parent / "isolated"
    code = main(["compare", str(base_config), "--methods", "ia3,lora", "--out", str(out), "train.max_steps=2",
                 "data.probe=null", "data.forgetting_prompts=null",
                 "--set", "ia3:method.targets=[no_such_proj]", "--set", "ia3:method.feedforward=[]"])
    assert code == 1
    report = json.loads((out / "report.json").read_text())
    assert report["isolated"] is True
    status = {r["method"]: r for r in report["runs"]}
    assert status["lora"]["status"] == "finished" and _eval(status["lora"]["run_dir"])["steps"] == 2
    assert status["ia3"]["status"] == "failed"
    assert status["ia3"]["error"].startswith("DeltatuneError: ") and "no_such_proj" in status["ia3"]["error"]
    assert "no_such_proj" in status["ia3"]["traceback"]  # the child's output tail
    assert "each run in its own process" in (out / "report.md").read_text()
    assert (out / "configs" / "lora-seed0.yaml").is_file()
    assert "run dir: " in capsys.readouterr().out  # the child's output is shown here


def test_an_unknown_method_fails_before_any_run(base_config, capsys):
    out = base_config.parent / "unknown"
    assert main(["compare", str(base_config), "--methods", "lora,lorra", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "unknown method lorra" in err and "known:" in err and "ia3" in err
    assert not out.exists()


def test_an_invalid_config_for_one_method_fails_before_any_run(base_config, capsys):
    out = base_config.parent / "invalid"
    args = ["compare", str(base_config), "--methods", "lora,ia3", "--out", str(out), "--set", "ia3:method.r=4"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "method ia3" in err and "method.r" in err
    assert not out.exists()
    assert main(["compare", str(base_config), "--methods", "lora", "--out", str(out), "output.dir=x"]) == 2
    assert "--out" in capsys.readouterr().err


def test_per_method_settings_come_from_the_nearest_ready_yaml(tmp_path, base_config, monkeypatch):
    raw = yaml.safe_load(base_config.read_text())
    own = tmp_path / "base.yaml"
    own.write_text(yaml.safe_dump(raw))
    (tmp_path / "sft_ia3.yaml").write_text(yaml.safe_dump({"method": {"name": "ia3", "targets": ["v_proj"],
                                                                      "feedforward": []}, "train": {"lr": 0.123}}))
    plan = plan_module.make_plan(str(own), "ia3,bitfit", out=str(tmp_path / "o"))
    ia3 = next(r for r in plan.runs if r.method == "ia3")
    assert ia3.cfg.train.lr == 0.123 and ia3.cfg.method.targets == ["v_proj"]  # the config's folder first
    monkeypatch.setattr(plan_module, "REPO_CONFIGS", tmp_path / "none")
    plan = plan_module.make_plan(str(own), "bitfit", out=str(tmp_path / "o"))
    assert plan.settings["bitfit"].source == "method defaults" and plan.runs[0].cfg.train.lr == raw["train"]["lr"]
    assert not (tmp_path / "o").exists()  # planning writes nothing


def test_aggregate_is_mean_and_sample_std():
    assert aggregate([1.0, 3.0]) == {"mean": 2.0, "std": pytest.approx(2 ** 0.5), "n": 2, "values": [1.0, 3.0]}
    assert aggregate([None, 2.0])["n"] == 1 and aggregate([])["mean"] is None
