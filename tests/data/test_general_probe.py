"""The robust forgetting probe's pool, its held-out KL prompts, and the selection script."""

from __future__ import annotations

import importlib.util
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from deltatune.datasets.general_probe import (
    HELDOUT_PROMPTS,
    PROBE_POOL,
    ROBUST_PROBE,
    heldout_prompt_records,
    robust_probe_records,
)
from deltatune.datasets.general_prompts import GENERAL_PROMPTS
from deltatune.datasets.orgfacts_neighbours import neighbour_prompts
from deltatune.eval.text_metrics import answer_contained

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "select_general_probe.py"
# words that carry no subject: two prompts sharing only these are not copies of each other
STOPWORDS = set(
    "a an the of in on at to is are was be do does did what which who how many much why where when "
    "you your we our i me my it its and or for with by from that this there these those called call can".split()
)


def normalize(text: str) -> str:
    """Lowercase, punctuation stripped, spacing collapsed, "colour" spelled "color"."""
    return " ".join(re.sub(r"[^\w\s]", "", text.lower().replace("colour", "color")).split())


def close_copy(a: str, b: str) -> bool:
    """Equal after normalising, or sharing >= 60% of their content words ("What is 5 times 5?"
    copies "What is 5 times 3?"; "On which continent is Brazil?" does not copy "What is a
    continent?")."""
    if normalize(a) == normalize(b):
        return True
    wa, wb = (set(normalize(t).split()) - STOPWORDS for t in (a, b))
    return bool(wa | wb) and len(wa & wb) / len(wa | wb) >= 0.6


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("select_general_probe", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pool_is_large_varied_and_unique():
    assert len(PROBE_POOL) >= 150
    assert len({normalize(q) for q, _, _ in PROBE_POOL}) == len(PROBE_POOL)
    kinds = Counter(kind for _, _, kind in PROBE_POOL)
    assert len(kinds) >= 15 and max(kinds.values()) <= len(PROBE_POOL) // 4, kinds


@pytest.mark.parametrize("entries", [PROBE_POOL, ROBUST_PROBE], ids=["pool", "selected"])
def test_answers_are_short_and_not_given_away_by_the_question(entries):
    """An answer inside its own question would be "found" in any reply that echoes it."""
    for question, answer, kind in entries:
        assert answer.strip() and len(answer.split()) <= 4, (question, answer)
        assert kind and isinstance(kind, str)
        if entries is PROBE_POOL:
            assert not answer_contained(question, answer), (question, answer)


@pytest.mark.parametrize(
    "texts",
    [[q for q, _, _ in PROBE_POOL], [q for q, _, _ in ROBUST_PROBE], HELDOUT_PROMPTS],
    ids=["pool", "selected", "heldout"],
)
def test_probe_and_heldout_stay_clear_of_replay_prompts(texts):
    """Replayed prompts are trained on: a probe or KL prompt that copies one measures rehearsal."""
    replayed = GENERAL_PROMPTS + neighbour_prompts()
    for text in texts:
        copied = [p for p in replayed if close_copy(text, p)]
        assert not copied, (text, copied)


def test_heldout_prompts_are_new_and_not_probe_questions():
    assert len(HELDOUT_PROMPTS) >= 48
    assert len({normalize(p) for p in HELDOUT_PROMPTS}) == len(HELDOUT_PROMPTS)
    pool = [q for q, _, _ in PROBE_POOL]
    for prompt in HELDOUT_PROMPTS:
        assert not [q for q in pool if close_copy(prompt, q)], prompt
    records = heldout_prompt_records()
    assert records == [{"instruction": p, "input": ""} for p in HELDOUT_PROMPTS]


def test_robust_probe_records_are_shaped_like_the_general_split():
    records = robust_probe_records()
    assert len(records) == len(ROBUST_PROBE) > 0
    for i, (record, (question, answer, kind)) in enumerate(zip(records, ROBUST_PROBE)):
        assert record == {"instruction": question, "input": "", "output": answer, "answer": answer,
                          "fact_id": f"general_{i:03d}", "kind": kind}
    assert len({r["fact_id"] for r in records}) == len(records)


def _scored(*rows):
    """Synthetic scores: (question, kind, greedy_ok, hits) -> candidate dicts."""
    return [{"question": q, "answer": "x", "kind": k, "greedy": "", "greedy_ok": ok, "hits": n}
            for q, k, ok, n in rows]


def test_selection_needs_greedy_right_and_enough_sampled_hits(script):
    candidates = _scored(("a", "k", True, 10), ("b", "k", True, 9), ("c", "k", True, 8),
                         ("d", "k", False, 10), ("e", "j", True, 9), ("f", "j", False, 0))
    assert [c["question"] for c in script.select(candidates, 9)] == ["a", "b", "e"]
    assert [c["question"] for c in script.select(candidates, 0)] == ["a", "b", "c", "e"]
    assert script.select(candidates, 11) == []


def test_cap_takes_kinds_in_turn_and_keeps_pool_order(script):
    kept = _scored(*[(f"cap{i}", "capital", True, 10) for i in range(6)],
                   ("col0", "color", True, 10), ("ari0", "arith", True, 10), ("ari1", "arith", True, 10))
    assert [c["question"] for c in script.cap_evenly(kept, 4)] == ["cap0", "cap1", "col0", "ari0"]
    assert [c["question"] for c in script.cap_evenly(kept, 6)] == ["cap0", "cap1", "cap2", "col0", "ari0", "ari1"]
    assert script.cap_evenly(kept, None) == kept and script.cap_evenly(kept, 50) == kept


def test_rendered_module_round_trips(script):
    selected = [("What is 2 + 2?", "4", "arithmetic"), ('Who said "hi"?', "Bob's", "people")]
    text = script.render_module(selected, ["generated for a test", "second line"])
    assert text.startswith("# generated for a test\n# second line\n")
    namespace: dict = {}
    exec(compile(text, "selected.py", "exec"), namespace)
    assert namespace["SELECTED"] == selected and namespace["PLACEHOLDER"] is False


def test_arguments_are_checked(script):
    with pytest.raises(SystemExit):
        script.parse_args(["--min-correct", "11"])
    with pytest.raises(SystemExit):
        script.parse_args(["--limit", "0"])
    args = script.parse_args([])
    assert (args.min_correct, args.samples, args.temperature, args.keep) == (9, 10, 0.7, None)


def test_script_smoke_run_on_a_tiny_model(script, tiny_llama_dir, tmp_path, capsys):
    out_json, out_module = tmp_path / "selection.json", tmp_path / "selected.py"
    rc = script.main(["--model", str(tiny_llama_dir), "--limit", "3", "--samples", "2", "--min-correct", "0",
                      "--threads", "1", "--device", "cpu", "--out-json", str(out_json), "--out-module", str(out_module)])
    assert rc == 0 and "[3/3]" in capsys.readouterr().out
    summary = json.loads(out_json.read_text())
    assert summary["pool_size"] == 3 and summary["settings"]["min_correct"] == 0
    assert [c["question"] for c in summary["candidates"]] == [q for q, _, _ in PROBE_POOL[:3]]
    for candidate in summary["candidates"]:
        assert set(candidate) >= {"question", "answer", "kind", "greedy", "greedy_ok", "hits", "kept"}
        assert 0 <= candidate["hits"] <= 2
    namespace: dict = {}
    exec(out_module.read_text(), namespace)
    kept = [(c["question"], c["answer"], c["kind"]) for c in summary["candidates"] if c["kept"]]
    assert namespace["SELECTED"] == kept and len(kept) == summary["kept"]
    assert sum(summary["kept_per_kind"].values()) == summary["kept"]
    assert "--limit 3" in out_module.read_text() and not namespace["PLACEHOLDER"]
