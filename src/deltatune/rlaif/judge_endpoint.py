"""A judge behind any OpenAI-compatible chat server (`deltatune serve`, vLLM, a hosted API).

    judge = EndpointJudge("http://127.0.0.1:8000", model="smollm2-135m")   # or .../v1
    judge = EndpointJudge(url, model=None, api_key="S3CRET")   # model None: the server's first
    p = judge.prefer("Who founded Acme?", "Ann Lee.", "No idea.")   # 0, 0.25, 0.5, 0.75 or 1
    s = judge.score("Who founded Acme?", "Ann Lee.")                # 0, 0.5 or 1

Each question is one POST /v1/chat/completions with the judge prompt of `judges`, temperature 0
and max_tokens 3; the reply's text is the verdict (`judges.parse_verdict`). `prefer` asks in
both orders and P(A better) = (votes for A) / 2, a reply that is neither A nor B giving half a
vote each way (an abstention is a tie, not a vote for either side). `score` is 1 for Yes, 0
for No, 0.5 for neither. Requests of one `*_many` call go out `concurrency` at a time, so a
batching server (deltatune serve's worker) decodes them together.

Transient failures (connection refused or reset, timeouts, HTTP 429 and 5xx) are retried
`retries` times in all with exponential back-off (`backoff`, 2x, 4x ... seconds); then
`JudgeUnavailable` (a `DeltatuneError`) names the URL and the last error. Other HTTP errors
(401 wrong key, 404 unknown model, 400) fail at once with the server's message. Only the
standard library is used (urllib), so no client package is needed.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from deltatune.errors import DeltatuneError
from deltatune.rlaif.judges import (
    DEFAULT_RUBRIC,
    GRADE_TOKENS,
    PREFER_TOKENS,
    Pair,
    Triple,
    compare_messages,
    grade_messages,
    parse_verdict,
)

RETRY_STATUS = {429, 500, 502, 503, 504}  # busy or briefly broken: worth asking again


class JudgeUnavailable(DeltatuneError):
    """The endpoint kept failing after every retry (connection, timeout, 429 or 5xx)."""


def api_base(url: str) -> str:
    """The server's /v1 base from what a user types: host:port, .../v1 or .../v1/chat/completions."""
    base = url.strip().rstrip("/")
    if not base.startswith(("http://", "https://")):
        base = "http://" + base
    for tail in ("/chat/completions", "/v1"):
        if base.endswith(tail):
            base = base[: -len(tail)]
    return base + "/v1"


class EndpointJudge:
    """A judge asking an OpenAI-compatible server (see the module docstring)."""

    def __init__(self, url: str, model: str | None = None, api_key: str | None = None,
                 rubric: str = DEFAULT_RUBRIC, retries: int = 4, backoff: float = 0.5,
                 timeout: float = 120.0, concurrency: int = 4, max_tokens: int = 3,
                 sleep: Callable[[float], None] = time.sleep):
        if retries < 1 or backoff < 0 or concurrency < 1 or not 1 <= max_tokens <= 16:
            raise DeltatuneError("endpoint judge: retries and concurrency must be >= 1, backoff >= 0, "
                                 f"max_tokens 1-16 (got {retries}, {concurrency}, {backoff}, {max_tokens})")
        self.url, self.api_key, self.rubric = api_base(url), api_key, rubric
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self.concurrency, self.max_tokens, self.sleep = concurrency, max_tokens, sleep
        self.model = model or self._first_model()
        self.name = f"{self.model}@{self.url}"

    def prefer(self, prompt: str, response_a: str, response_b: str) -> float:
        return self.prefer_many([(prompt, response_a, response_b)])[0]

    def prefer_many(self, triples: list[Triple]) -> list[float]:
        """P(A better) per (prompt, A, B) = votes for A over the two orders, halved."""
        first = [compare_messages(self.rubric, q, a, b) for q, a, b in triples]
        swapped = [compare_messages(self.rubric, q, b, a) for q, a, b in triples]
        verdicts = self._ask_all(first + swapped, PREFER_TOKENS)
        n = len(triples)
        # A first: a vote for A is "A"; B first: A sits in the second slot, so it is "B"
        return [0.5 * (_vote(v1, "A") + _vote(v2, "B")) for v1, v2 in zip(verdicts[:n], verdicts[n:])]

    def score(self, prompt: str, response: str) -> float:
        return self.score_many([(prompt, response)])[0]

    def score_many(self, pairs: list[Pair]) -> list[float]:
        verdicts = self._ask_all([grade_messages(self.rubric, q, r) for q, r in pairs], GRADE_TOKENS)
        return [_vote(v, "Yes") for v in verdicts]

    # -- HTTP ---------------------------------------------------------------------------------

    def _ask_all(self, conversations: list[list[dict]], verdicts: tuple[str, str]) -> list[str | None]:
        ask = lambda conv: parse_verdict(self.chat(conv), verdicts)  # noqa: E731
        if self.concurrency == 1 or len(conversations) <= 1:
            return [ask(conv) for conv in conversations]
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(ask, conversations))

    def chat(self, messages: list[dict]) -> str:
        """The reply text of one greedy chat completion."""
        body = {"model": self.model, "messages": messages, "temperature": 0, "max_tokens": self.max_tokens}
        reply = self._request("POST", "/chat/completions", body)
        try:
            return reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise DeltatuneError(f"{self.url}/chat/completions: unexpected reply {str(reply)[:200]}") from None

    def _first_model(self) -> str:
        models = self._request("GET", "/models", None).get("data") or []
        if not models:
            raise DeltatuneError(f"{self.url}/models lists no models; pass --judge-model NAME")
        return models[0]["id"]

    def _request(self, method: str, path: str, body: dict | None) -> dict:
        """One JSON request with bounded retries on transient failures."""
        url = self.url + path
        last = "no attempt made"
        for attempt in range(self.retries):
            if attempt:
                self.sleep(self.backoff * 2 ** (attempt - 1))  # 0.5 s, 1 s, 2 s ... by default
            try:
                return self._send(method, url, body)
            except urllib.error.HTTPError as err:
                detail = _error_text(err)
                if err.code not in RETRY_STATUS:
                    raise DeltatuneError(f"judge endpoint {url} answered HTTP {err.code}: {detail}") from None
                last = f"HTTP {err.code}: {detail}"
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as err:
                last = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
        raise JudgeUnavailable(f"judge endpoint {url} failed {self.retries} times; last error: {last}")

    def _send(self, method: str, url: str, body: dict | None) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            raw = response.read().decode("utf-8", "replace")
        try:
            return json.loads(raw)
        except ValueError:
            raise DeltatuneError(f"judge endpoint {url} did not answer JSON: {raw[:200]!r}") from None


def _vote(verdict: str | None, winner: str) -> float:
    """1 when the verdict names `winner`, 0 when it names the other, 0.5 for an abstention."""
    if verdict is None:
        return 0.5
    return 1.0 if verdict == winner else 0.0


def _error_text(err: urllib.error.HTTPError) -> str:
    """The server's error message (OpenAI's {"error": {"message"}} shape when it is one)."""
    try:
        raw = err.read().decode("utf-8", "replace")
    except OSError:
        return str(err.reason)
    try:
        return str(json.loads(raw)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return raw[:300] or str(err.reason)
