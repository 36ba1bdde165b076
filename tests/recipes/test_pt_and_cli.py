"""`pt` recipe on raw text, the `deltatune train` command, and one slow run on real SmolLM2."""

from __future__ import annotations

import json

import pytest
import yaml

from deltatune.cli import main
from deltatune.recipes import pt
from deltatune.training.metrics import read_metrics

TEXT = "The Zephyr Institute was founded in {} by {} in the town of {}. "


def _text_file(path, n=20):
    rows = [{"text": TEXT.format(1900 + i, name, town) * 2}
            for i, (name, town) in enumerate(zip(["Ada", "Bo", "Cy", "Dee"] * 5, ["Ulm", "Ost", "Vik", "Zed"] * 5))]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:n]))
    return str(path)


def test_pt_recipe_trains_on_every_token(make_cfg, tmp_path):
    data = {"train": _text_file(tmp_path / "corpus.jsonl"), "val": _text_file(tmp_path / "v.jsonl", 4),
            "format": "text", "pack": True}
    cfg = make_cfg(run="pt", data=data, recipe="pt", method={"name": "full"}, train={"max_steps": 15, "lr": 3e-3})
    run_dir = pt.run(cfg)
    losses = [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl", "train")]
    assert len(losses) == 15 and losses[-1] < losses[0] - 0.5
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["after"]["val"]["loss"] < 10.0 and (run_dir / "adapter").is_dir()


def test_cli_train_with_overrides_and_resume(make_cfg, tmp_path, capsys):
    cfg = make_cfg(run="cli")
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    assert main(["train", str(path), "train.max_steps=2", "train.save_every=1"]) == 0
    run_dir = tmp_path / "cli"
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl", "train")] == [1, 2]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["max_steps"] == 2
    assert f"run dir: {run_dir}" in capsys.readouterr().out
    # again without --resume: refused with a clean message (exit 2); with --resume: continues
    assert main(["train", str(path), "train.max_steps=2"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", str(path), "train.max_steps=4", "--resume"]) == 0
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl", "train")] == [1, 2, 3, 4]


@pytest.mark.slow
def test_smollm2_lora_few_steps(smollm2_dir, make_cfg, alpaca_file, tmp_path):
    from deltatune.recipes import sft

    cfg = make_cfg(
        run="smol",
        model={"name": "smollm2-135m"},
        method={"name": "lora", "r": 8, "alpha": 16, "targets": "all-linear"},
        data={"train": alpaca_file("smol.jsonl", 8), "val": None, "max_length": 96},
        train={"max_steps": 3, "batch_size": 4, "lr": 1e-3},
    )
    run_dir = sft.run(cfg)
    losses = [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl", "train")]
    assert len(losses) == 3 and all(0 < x < 20 for x in losses)
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert (run_dir / "adapter" / "adapter_config.json").is_file()
