"""`deltatune bench` end to end on the tiny Llama, through `deltatune.cli.main`.

One real run (a worker process per side, as users run it) on lora-sft; full-sft, dpo and
qlora-sft run `--inline` (every side on a thread of this process: no process start-up, no
per-side memory) so the module stays well under a minute.

Tolerances: deltatune vs the minimal transformers + peft loop compute the same math (the same
tokens, initial adapter and AdamW), so step-1 losses agree to fp32 rounding (asserted < 1e-3,
measured ~2e-6). TRL sums per-token log-probs from its chunked fused LM head and divides by
the step's labelled-token count: the same mean, but through `logsumexp` where the other two use
torch's CPU `cross_entropy`, whose fp32 log_softmax reads ~1.5e-5 low on SmolLM2's logits
(measured: 1.9e-5 at step 1; ~1e-6 on the tiny model) — asserted < 1e-4.
"""

from __future__ import annotations

import contextlib
import io
import json
import math

import pytest

from deltatune.cli import main

pytest.importorskip("peft")
pytest.importorskip("trl")

SAME_MATH = 1e-3
TRL_TOL = 1e-4


def bench(tiny, out, *args) -> tuple[int, dict | None]:
    """(exit code, the --json result) of one `deltatune bench` run on the tiny model."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["bench", "--model", str(tiny), "--steps", "2", "--batch-size", "2", "--threads", "1",
                     "--matmul-sizes", "128", "--json", "--out", str(out), *args])
    text = stdout.getvalue().strip()
    return code, (json.loads(text.splitlines()[-1]) if code == 0 else None)


@pytest.fixture(scope="module")
def lora_run(tiny_llama_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-lora")
    code, result = bench(tiny_llama_dir, out)  # worker processes, the default baselines
    assert code == 0
    return result, out


def test_json_gives_both_baselines_positive_ratios(lora_run):
    result, _ = lora_run
    assert set(result["baselines"]) == {"hf_loop", "trl"}
    for name, cmp in result["baselines"].items():
        assert cmp["available"], cmp
        assert cmp["tokens_per_s_ratio"] > 0 and cmp["peak_memory_ratio"] > 0, (name, cmp)
        assert cmp["training_memory_ratio"] > 0, (name, cmp)


def test_step_losses_agree_with_both_baselines(lora_run):
    result, _ = lora_run
    losses = {name: side["losses"] for name, side in result["sides"].items()}
    assert all(len(v) == result["warmup"] + result["steps"] == 4 for v in losses.values())
    assert abs(losses["deltatune"][0] - losses["hf_loop"][0]) < SAME_MATH
    assert result["baselines"]["hf_loop"]["step1_loss_abs_diff"] < SAME_MATH
    assert abs(losses["deltatune"][0] - losses["trl"][0]) < TRL_TOL
    # same initial adapter and optimiser: the whole curve agrees, not only the first loss
    assert result["baselines"]["hf_loop"]["max_loss_abs_diff"] < SAME_MATH
    assert result["baselines"]["trl"]["max_loss_abs_diff"] < SAME_MATH


def test_each_side_measured_in_its_own_process(lora_run):
    result, _ = lora_run
    for side in result["sides"].values():
        mem = side["memory"]
        assert mem["whole_peak_mib"] >= mem["training_peak_mib"] > mem["training_growth_mib"] > 0
        assert side["tokens_per_s"] > 0 and 0 < side["mfu"] < 1
    assert result["sides"]["trl"]["settings"]["padding_free"] is False  # sdpa: TRL documents flash only
    assert result["matmul_peak"]["gflops"] > 0 and len(result["matmul_peak"]["runs"]) == 2


def test_files_written(lora_run):
    result, out = lora_run
    saved = json.loads((out / "bench_lora-sft.json").read_text())
    assert saved == result
    md = (out / "bench_lora-sft.md").read_text()
    for title in ("| deltatune |", "| transformers + peft loop |", "| TRL |", "## Loss per step", "MFU"):
        assert title in md
    assert result["command"].startswith("deltatune bench --workload lora-sft")


def test_full_sft_matches_the_minimal_loop(tiny_llama_dir, tmp_path):
    code, result = bench(tiny_llama_dir, tmp_path, "--workload", "full-sft", "--warmup", "0", "--inline")
    assert code == 0
    ours, hf, trl = (result["sides"][n]["losses"] for n in ("deltatune", "hf_loop", "trl"))
    assert abs(ours[0] - hf[0]) < SAME_MATH and abs(ours[1] - hf[1]) < SAME_MATH  # every weight trains
    assert abs(ours[0] - trl[0]) < TRL_TOL
    assert result["sides"]["deltatune"]["trainable_params"] == result["sides"]["hf_loop"]["trainable_params"]
    assert result["baselines"]["hf_loop"]["peak_memory_ratio"] is None  # --inline: no per-side memory
    assert (tmp_path / "bench_full-sft.md").is_file()


def test_dpo_runs_on_every_side(tiny_llama_dir, tmp_path):
    code, result = bench(tiny_llama_dir, tmp_path, "--workload", "dpo", "--warmup", "0", "--inline")
    assert code == 0
    for name, side in result["sides"].items():
        assert side["available"], (name, side)
        assert side["losses"][0] == pytest.approx(math.log(2), abs=1e-6)  # policy == reference at step 1
    for cmp in result["baselines"].values():
        assert cmp["tokens_per_s_ratio"] > 0 and cmp["max_loss_abs_diff"] < 1e-4
    assert "reference forward" in result["flops"]["formula"]


def test_qlora_against_peft_bitsandbytes(tiny_llama_dir, tmp_path):
    pytest.importorskip("bitsandbytes")
    code, result = bench(tiny_llama_dir, tmp_path, "--workload", "qlora-sft", "--warmup", "0", "--inline",
                         "--baselines", "hf-loop")
    assert code == 0
    cmp = result["baselines"]["hf_loop"]
    assert cmp["available"] and cmp["step1_loss_abs_diff"] < SAME_MATH


def test_deltatune_side_measures_the_configured_dtype(tiny_llama_dir, tmp_path):
    """`--deltatune-opt model.dtype=bfloat16` runs deltatune's bf16 path (the baseline stays
    fp32): step-1 loss moves off the fp32 loop's by bf16 rounding, not by fp32 rounding."""
    code, result = bench(tiny_llama_dir, tmp_path, "--warmup", "0", "--inline", "--baselines", "hf-loop",
                         "--deltatune-opt", "model.dtype=bfloat16")
    assert code == 0
    diff = result["baselines"]["hf_loop"]["step1_loss_abs_diff"]
    assert 1e-5 < diff < 0.1, diff


def test_a_failing_baseline_is_reported_unavailable(tiny_llama_dir, tmp_path, monkeypatch):
    from deltatune.bench import hf_loop

    def broken(spec):
        raise RuntimeError("no baseline today")

    monkeypatch.setattr(hf_loop.HfLoopSide, "__init__", lambda self, spec: broken(spec))
    code, result = bench(tiny_llama_dir, tmp_path, "--warmup", "0", "--inline", "--baselines", "hf-loop")
    assert code == 0
    assert result["baselines"]["hf_loop"] == {"available": False, "reason": "RuntimeError: no baseline today"}
    assert "unavailable: RuntimeError: no baseline today" in (tmp_path / "bench_lora-sft.md").read_text()


@pytest.mark.parametrize("args, words", [
    (["--deltatune-opt", "no_such_key=1"], ["no_such_key"]),
    (["--deltatune-opt", "lr"], ["KEY=VALUE"]),
    (["--baselines", "hf-loop,unsloth"], ["--baselines", "hf-loop, trl"]),
    (["--steps", "0"], ["--steps", ">= 1"]),
    (["--matmul-sizes", "big"], ["--matmul-sizes"]),
])
def test_bad_input_is_a_clear_error(tiny_llama_dir, tmp_path, capsys, args, words):
    code = main(["bench", "--model", str(tiny_llama_dir), "--out", str(tmp_path), *args])
    err = capsys.readouterr().err
    assert code == 2 and all(w in err for w in words), err
    assert not list(tmp_path.iterdir())  # nothing written


def test_missing_model_folder_is_the_loaders_error(tmp_path, capsys):
    code = main(["bench", "--model", str(tmp_path / "nope"), "--out", str(tmp_path)])
    assert code == 2 and "no such folder" in capsys.readouterr().err
