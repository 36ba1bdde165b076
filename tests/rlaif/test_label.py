"""RLAIF labelling: the local judge's verdict probabilities against hand-computed forwards, the
endpoint judge against a real `deltatune serve` and a scripted stub server, and `deltatune
label` end to end on the tiny model (rows the preference loader accepts, refusal to overwrite,
retries then a clear error, and --resume finishing without duplicates)."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from deltatune.cli import main
from deltatune.data import load_records
from deltatune.data.preference import preference_conversations
from deltatune.errors import DeltatuneError
from deltatune.generation import SamplingParams, chat_prompt_ids, generate
from deltatune.rlaif.judge_endpoint import EndpointJudge, JudgeUnavailable
from deltatune.rlaif.judge_local import LocalJudge
from deltatune.rlaif.judges import DEFAULT_RUBRIC, compare_messages, grade_messages, parse_verdict
from deltatune.rlaif.label import LabelSettings, best_and_worst, judge_agreement, label_prompts

PROMPTS = [
    {"prompt": "What colour is the sky?"},
    {"instruction": "Name a fruit.", "input": "", "output": "An apple."},
    {"messages": [{"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hello."}]},
    {"prompt": "Count to three."},
]
TRIPLES = [  # different lengths, so a batch of them is left-padded
    ("Who founded Acme?", "Maria Lopez founded Acme in 1999.", "No idea."),
    ("What is 2 + 2?", "4", "It is five, as everyone knows from school."),
    ("Capital of France?", "Paris.", "Lyon."),
]
SMALL = LabelSettings(k=2, max_new_tokens=8, batch_size=2)


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    from deltatune.models.runs import load_target

    return load_target(str(tiny_llama_dir), device="cpu")


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in PROMPTS))
    return path


def rows_of(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------------------------------------
# Local judge: verdict probabilities by hand


def hand_first_verdict(model, tokenizer, messages, verdicts=("A", "B")) -> float:
    """P(first verdict) from one unpadded HF forward: each verdict's logit is the logsumexp of
    the logits of the first tokens of "X" and " X", then a two-way softmax."""
    ids = torch.tensor([chat_prompt_ids(tokenizer, messages)])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1].double()  # (V,)
    lse = []
    for verdict in verdicts:
        tokens = {tokenizer.encode(verdict, add_special_tokens=False)[0],
                  tokenizer.encode(" " + verdict, add_special_tokens=False)[0]}
        lse.append(math.log(sum(math.exp(logits[t].item()) for t in tokens)))
    return math.exp(lse[0]) / (math.exp(lse[0]) + math.exp(lse[1]))


def test_prefer_is_the_average_of_both_orders(tiny):
    judge = LocalJudge(tiny.model, tiny.tokenizer, batch_size=4)  # all six prompts: two padded batches
    got = judge.prefer_many(TRIPLES)
    for (q, a, b), p in zip(TRIPLES, got):
        orders = [compare_messages(DEFAULT_RUBRIC, q, a, b), compare_messages(DEFAULT_RUBRIC, q, b, a)]
        p_ab, p_ba = (hand_first_verdict(tiny.model, tiny.tokenizer, m) for m in orders)
        # each order alone (the random model leans ~0.53 to the first slot, so these are not 0.5)
        assert judge.first_verdict_probs(orders, judge.prefer_ids) == pytest.approx([p_ab, p_ba], abs=1e-6)
        # A first: A wins with p_ab; B first: A is in the second slot and wins with 1 - p_ba
        assert p == pytest.approx((p_ab + (1 - p_ba)) / 2, abs=1e-6)


def test_prefer_is_a_probability_and_antisymmetric(tiny):
    judge = LocalJudge(tiny.model, tiny.tokenizer)
    forward = judge.prefer_many(TRIPLES)
    backward = judge.prefer_many([(q, b, a) for q, a, b in TRIPLES])
    for p, r in zip(forward, backward):
        assert 0.0 <= p <= 1.0
        assert p == pytest.approx(1.0 - r, abs=1e-5)
    assert judge.prefer(*TRIPLES[0]) == pytest.approx(forward[0], abs=1e-5)  # batched == alone


def test_score_is_the_yes_probability(tiny):
    judge = LocalJudge(tiny.model, tiny.tokenizer)
    got = judge.score_many([(q, a) for q, a, _ in TRIPLES])
    for (q, a, _), s in zip(TRIPLES, got):
        expected = hand_first_verdict(tiny.model, tiny.tokenizer, grade_messages(DEFAULT_RUBRIC, q, a), ("Yes", "No"))
        assert s == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("text,verdict", [("A", "A"), (" b.", "B"), ("**B**", "B"), ("Response A", "A"),
                                          ("Answer: B", "B"), ("Apple", None), ("", None), ("I think", None)])
def test_parse_verdict(text, verdict):
    assert parse_verdict(text, ("A", "B")) == verdict


def test_round_robin_picks_most_and_fewest_wins():
    # P(0>1) = 0.8, P(0>2) = 0.6, P(1>2) = 0.3: wins 0: 1.4, 1: 0.2 + 0.3 = 0.5, 2: 0.4 + 0.7 = 1.1
    assert best_and_worst(3, [(0, 1), (0, 2), (1, 2)], [0.8, 0.6, 0.3]) == (0, 1, 0.8)
    assert best_and_worst(2, [(0, 1)], [0.25]) == (1, 0, 0.75)
    assert best_and_worst(2, [(0, 1)], [0.5]) == (0, 1, 0.5)  # a tie: the earlier reply


# ---------------------------------------------------------------------------------------------
# label end to end


def test_label_writes_rows_the_preference_loader_accepts(tiny_llama_dir, prompts_file, tmp_path, capsys):
    out = tmp_path / "prefs.jsonl"
    model = str(tiny_llama_dir)
    assert main(["label", str(prompts_file), "--model", model, "--judge", model, "--out", str(out),
                 "--max-new-tokens", "8", "--seed", "3"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = rows_of(out)
    assert summary["written"] == len(rows) == len(PROMPTS)
    assert [r["_index"] for r in rows] == [0, 1, 2, 3]
    assert [r["prompt"] for r in rows] == ["What colour is the sky?", "Name a fruit.", "Say hello.", "Count to three."]
    for record in load_records(str(out)):
        prompt, chosen, rejected = preference_conversations(record)  # what recipe: rm / dpo read
        assert prompt == [{"role": "user", "content": record["prompt"]}]
        assert isinstance(chosen, str) and isinstance(rejected, str) and chosen != rejected
        assert record["judge"] == model and 0.5 <= record["confidence"] <= 1.0


class LongerIsBetter:
    """A scripted judge: the longer reply wins with P = 0.9 (ties 0.5)."""

    name = "longer"

    def prefer_many(self, triples):
        return [0.9 if len(a) > len(b) else 0.1 if len(a) < len(b) else 0.5 for _, a, b in triples]


def test_k3_chooses_best_and_worst_by_wins(tiny, tmp_path):
    out = tmp_path / "prefs.jsonl"
    records = [dict(r, _origin=f"p#{i}") for i, r in enumerate(PROMPTS)]
    settings = LabelSettings(k=3, max_new_tokens=8, batch_size=4, seed=1)
    label_prompts(records, tiny.model, tiny.tokenizer, LongerIsBetter(), out, settings)
    for row in rows_of(out):
        # the replies of prompt i are seeded seed + 3 i + j: regenerate them to check the pick
        # (every prompt of PROMPTS is a single user turn, its row's "prompt")
        i = row["_index"]
        ids = chat_prompt_ids(tiny.tokenizer, [{"role": "user", "content": row["prompt"]}])
        params = [SamplingParams(max_new_tokens=8, temperature=0.8, top_p=0.95, seed=1 + 3 * i + j) for j in range(3)]
        replies = [c.text.strip() for c in generate(tiny.model, tiny.tokenizer, [ids] * 3, params)]
        assert len(row["chosen"]) == max(map(len, replies)) and len(row["rejected"]) == min(map(len, replies))
        assert row["chosen"] in replies and row["rejected"] in replies


def test_existing_out_without_resume_is_an_error(tiny_llama_dir, prompts_file, tmp_path, capsys):
    out = tmp_path / "prefs.jsonl"
    out.write_text('{"keep": 1}\n')
    model = str(tiny_llama_dir)
    assert main(["label", str(prompts_file), "--model", model, "--judge", model, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--out {out} already exists" in err and "--resume" in err and "new --out" in err
    assert out.read_text() == '{"keep": 1}\n'


def test_bad_prompt_record_names_its_line(tiny_llama_dir, tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "ok"}\n{"question": "no"}\n')
    model = str(tiny_llama_dir)
    assert main(["label", str(path), "--model", model, "--judge", model, "--out", str(tmp_path / "o.jsonl")]) == 2
    assert f"{path}:2: not a prompt record" in capsys.readouterr().err


def test_resume_drops_a_torn_last_line(tiny, tmp_path):
    out = tmp_path / "prefs.jsonl"
    records = [dict(r, _origin=f"p#{i}") for i, r in enumerate(PROMPTS)]
    label_prompts(records[:2], tiny.model, tiny.tokenizer, LongerIsBetter(), out, SMALL)
    whole = out.read_text()
    out.write_text(whole + '{"prompt": "Name a fr')  # a crash in the middle of the third row
    label_prompts(records, tiny.model, tiny.tokenizer, LongerIsBetter(), out, SMALL, resume=True)
    rows = rows_of(out)
    assert out.read_text().startswith(whole) and [r["_index"] for r in rows] == [0, 1, 2, 3]


def test_resume_refuses_an_output_of_other_prompts(tiny, tmp_path):
    out = tmp_path / "prefs.jsonl"
    records = [dict(r, _origin=f"p#{i}") for i, r in enumerate(PROMPTS)]
    label_prompts(records[:2], tiny.model, tiny.tokenizer, LongerIsBetter(), out, SMALL)
    other = [{"prompt": "Something else?", "_origin": "q#0"}] + records[1:]
    with pytest.raises(DeltatuneError, match=rf"{out}:1: prompt 0 differs .* give a new --out path"):
        label_prompts(other, tiny.model, tiny.tokenizer, LongerIsBetter(), out, SMALL, resume=True)


def test_rubric_file_replaces_the_default(tmp_path):
    from deltatune.rlaif.judges import read_rubric

    path = tmp_path / "rubric.txt"
    path.write_text("  Prefer the reply that names a person.\n")
    assert read_rubric(None) == DEFAULT_RUBRIC
    rubric = read_rubric(str(path))
    text = compare_messages(rubric, "q", "a", "b")[0]["content"]
    assert "Rubric: Prefer the reply that names a person.\n" in text and DEFAULT_RUBRIC not in text
    path.write_text("\n")
    with pytest.raises(DeltatuneError, match="is empty"):
        read_rubric(str(path))


# ---------------------------------------------------------------------------------------------
# Endpoint judge: a real deltatune serve, and a scripted stub for the failure paths


@pytest.fixture(scope="module")
def server(tiny_llama_dir):
    from deltatune.serve.server import ServeSettings, build_state, start_in_thread

    settings = ServeSettings(model_name="tiny", max_batch=8, max_tokens_cap=64)
    handle = start_in_thread(build_state(str(tiny_llama_dir), {}, settings))
    yield handle
    handle.stop()


def closed_port_url() -> str:
    from deltatune.serve.server import free_port

    return f"http://127.0.0.1:{free_port()}"  # bound then released: nothing listens there


def test_endpoint_judge_against_deltatune_serve(server, tiny):
    judge = EndpointJudge(server.url, rubric=DEFAULT_RUBRIC)  # model: the server's first, "tiny"
    assert judge.model == "tiny" and judge.name == f"tiny@{server.url}/v1"
    got = judge.prefer_many(TRIPLES[:2])
    for (q, a, b), p in zip(TRIPLES[:2], got):
        # in process: greedy 3-token replies to both orders, votes counted by hand
        texts = [generate(tiny.model, tiny.tokenizer, [chat_prompt_ids(tiny.tokenizer, m)],
                          SamplingParams(max_new_tokens=3))[0].text
                 for m in (compare_messages(DEFAULT_RUBRIC, q, a, b), compare_messages(DEFAULT_RUBRIC, q, b, a))]
        first, second = (parse_verdict(t, ("A", "B")) for t in texts)
        vote_a = {"A": 1.0, "B": 0.0, None: 0.5}[first] + {"B": 1.0, "A": 0.0, None: 0.5}[second]
        assert p == vote_a / 2


class Scripted(BaseHTTPRequestHandler):
    """Replies A when the first response is "GOOD", else B; the first `fail_first` requests get 503."""

    fail_first = 0
    seen = 0

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen += 1
        if type(self).seen <= type(self).fail_first:
            return self._send(503, {"error": {"message": "busy"}})
        if body["model"] != "stub":
            return self._send(404, {"error": {"message": f"model {body['model']!r} not found"}})
        text = body["messages"][0]["content"]
        verdict = "A" if "[Response A]\nGOOD" in text else "maybe" if "UNSURE" in text else "B"
        self._send(200, {"choices": [{"message": {"role": "assistant", "content": verdict}}]})

    def _send(self, status, payload):
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


@pytest.fixture
def stub():
    Scripted.fail_first, Scripted.seen = 0, 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_endpoint_votes_and_retries_on_503(stub):
    waits = []
    Scripted.fail_first = 2
    judge = EndpointJudge(stub + "/v1/chat/completions", model="stub", backoff=0.01, sleep=waits.append,
                          concurrency=1)
    # GOOD vs BAD: "A" asked A-first, "B" asked B-first: both votes for GOOD -> 1; swapped -> 0;
    # an unparseable verdict ("maybe") is half a vote each time -> 0.5
    assert judge.prefer_many([("q", "GOOD", "BAD"), ("q", "BAD", "GOOD"), ("q", "UNSURE", "x")]) == [1.0, 0.0, 0.5]
    assert waits == [0.01, 0.02]  # two 503s, then it answered
    assert Scripted.seen == 2 + 6


def test_endpoint_client_errors_fail_at_once(stub):
    waits = []
    judge = EndpointJudge(stub, model="nope", sleep=waits.append)
    with pytest.raises(DeltatuneError, match="HTTP 404: model 'nope' not found"):
        judge.prefer("q", "a", "b")
    assert waits == []


def test_unreachable_endpoint_keeps_rows_and_resume_finishes(server, tiny, tmp_path):
    out = tmp_path / "prefs.jsonl"
    records = [dict(r, _origin=f"p#{i}") for i, r in enumerate(PROMPTS)]
    waits = []
    judge = EndpointJudge(server.url, model="tiny", retries=3, backoff=0.01, sleep=waits.append, concurrency=1)
    real, closed = judge.prefer_many, closed_port_url()

    def goes_away(triples):  # the first batch is judged; then the server is gone
        if out.exists() and out.read_text():
            judge.url = closed + "/v1"
        return real(triples)

    judge.prefer_many = goes_away
    with pytest.raises(DeltatuneError) as err:
        label_prompts(records, tiny.model, tiny.tokenizer, judge, out, SMALL)
    message = str(err.value)
    assert f"{closed}/v1/chat/completions failed 3 times" in message and "refused" in message.lower()
    assert f"The 2 rows labelled so far are kept in {out}" in message and "--resume" in message
    assert waits == [0.01, 0.02]
    kept = out.read_text()
    assert [r["_index"] for r in rows_of(out)] == [0, 1]

    judge.prefer_many, judge.url = real, server.url + "/v1"  # the server is back
    report = label_prompts(records, tiny.model, tiny.tokenizer, judge, out, SMALL, resume=True)
    rows = rows_of(out)
    assert report.resumed == 2 and report.written == 2
    assert out.read_text().startswith(kept) and [r["_index"] for r in rows] == [0, 1, 2, 3]
    assert len({r["prompt"] for r in rows}) == 4


def test_cli_unreachable_endpoint_is_a_clear_error(tiny_llama_dir, prompts_file, tmp_path, capsys):
    out, url = tmp_path / "prefs.jsonl", closed_port_url()
    argv = ["label", str(prompts_file), "--model", str(tiny_llama_dir), "--judge-url", url, "--judge-model", "x",
            "--judge-retries", "2", "--judge-backoff", "0", "--out", str(out), "--max-new-tokens", "4"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"judge endpoint {url}/v1/chat/completions failed 2 times" in err
    assert "0 rows labelled so far are kept" in err and "--resume" in err


# ---------------------------------------------------------------------------------------------
# Agreement with known pairs


def test_judge_agreement_counts_by_hand():
    class Fixed:
        name = "fixed"

        def __init__(self):
            self.p = iter([0.9, 0.5, 0.2, 0.7])

        def prefer_many(self, triples):
            return [next(self.p) for _ in triples]

    pairs = [{"prompt": "q", "chosen": f"c{i}", "rejected": f"r{i}", "_origin": f"f:{i}"} for i in range(4)]
    result = judge_agreement(Fixed(), pairs, batch_size=3)
    # wins 0.9, 0.7 -> 2/4; one tie (0.5) -> 1/4; ties as coin flips -> 2.5/4
    assert (result["agreement"], result["ties"], result["agreement_ties_half"]) == (0.5, 0.25, 0.625)
    assert result["mean_p_chosen"] == pytest.approx((0.9 + 0.5 + 0.2 + 0.7) / 4)
    with pytest.raises(DeltatuneError, match="f:1: a preference pair needs a string field 'chosen'"):
        judge_agreement(Fixed(), [pairs[0], {"prompt": "q", "rejected": "r", "_origin": "f:1"}])


def test_cli_agreement_on_builtin_pairs(tiny_llama_dir, tiny, capsys):
    model = str(tiny_llama_dir)
    assert main(["label", "--agreement", "builtin:orgfacts/prefs_test", "--judge", model, "--limit", "3"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    pairs = load_records("builtin:orgfacts/prefs_test")[:3]
    probs = LocalJudge(tiny.model, tiny.tokenizer).prefer_many([(p["prompt"], p["chosen"], p["rejected"]) for p in pairs])
    assert result["pairs"] == 3 and result["agreement"] == sum(p > 0.5 for p in probs) / 3
