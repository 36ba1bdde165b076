"""Load test for `deltatune serve`: many concurrent OpenAI-style clients against one server.

    .venv/bin/python benchmarks/serve_load.py                       # tiny random Llama, 32 clients x 4
    .venv/bin/python benchmarks/serve_load.py --model smollm2-135m --clients 32 --requests 2 --max-tokens 16
    .venv/bin/python benchmarks/serve_load.py --url http://127.0.0.1:8000 --models base,a,b   # a running server

What it does: starts `deltatune serve` as a subprocess (its own process, so client and server
do not share a GIL) over the base plus two random LoRA adapters, records every model's
greedy answer to each prompt one request at a time (the expected answers), then runs two
scenarios with the same clients and requests — `base_only` (every request to the base) and
`switching` (requests rotate base / adapter a / adapter b, so consecutive batches swap adapters).
A quarter of the requests stream (SSE). Every response must be a 200 whose text equals the
expected answer, or a clean 429/503 with OpenAI's error body; anything else (500s, malformed
bodies, broken streams, timeouts = hung connections) counts as an error. Reports requests/s,
p50/p99 latency per scenario and switching/base ratios, and writes them as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

PROMPTS = [
    "What colour is the door?",
    "Name a city by the sea.",
    "Say something about trees.",
    "How many legs does a spider have?",
]


# ---------------------------------------------------------------------------------------------
# One request, checked


async def one_request(http: httpx.AsyncClient, model: str, prompt: str, max_tokens: int, stream: bool,
                      expected: str | None, timeout: float) -> dict:
    """Send one chat completion; classify the outcome: ok | mismatch | 429 | 503 | error."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "temperature": 0, "stream": stream}
    start = time.perf_counter()
    try:
        text, status = await asyncio.wait_for(_send(http, body, stream), timeout)
    except asyncio.TimeoutError:
        return {"outcome": "error", "detail": "timeout (hung connection?)", "latency": time.perf_counter() - start}
    except Exception as err:  # connection reset, malformed body, broken stream: all are failures
        return {"outcome": "error", "detail": f"{type(err).__name__}: {err}", "latency": time.perf_counter() - start}
    latency = time.perf_counter() - start
    if status == 200:
        outcome = "ok" if expected is None or text == expected else "mismatch"
        return {"outcome": outcome, "latency": latency, "text": text}
    return {"outcome": str(status) if status in (429, 503) else "error", "detail": f"HTTP {status}: {text[:200]}",
            "latency": latency}


async def _send(http: httpx.AsyncClient, body: dict, stream: bool) -> tuple[str, int]:
    if not stream:
        r = await http.post("/v1/chat/completions", json=body)
        if r.status_code != 200:
            _check_error_body(r.status_code, r.json())
            return r.text, r.status_code
        return r.json()["choices"][0]["message"]["content"], 200
    async with http.stream("POST", "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            payload = json.loads(await r.aread())
            _check_error_body(r.status_code, payload)
            return json.dumps(payload), r.status_code
        parts, done = [], False
        async for line in r.aiter_lines():
            if not line:
                continue
            assert line.startswith("data: "), f"bad SSE line {line!r}"
            data = line[6:]
            if data == "[DONE]":
                done = True
                break
            chunk = json.loads(data)
            if "error" in chunk:
                raise RuntimeError(f"in-stream error: {chunk['error']}")
            for choice in chunk["choices"]:
                parts.append(choice["delta"].get("content") or "")
        if not done:
            raise RuntimeError("stream ended without data: [DONE]")
        return "".join(parts), 200


def _check_error_body(status: int, payload: dict) -> None:
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict) or not {"message", "type", "param", "code"} <= set(error):
        raise RuntimeError(f"HTTP {status} without OpenAI error body: {payload!r}")


# ---------------------------------------------------------------------------------------------
# Scenarios


async def expected_answers(url: str, models: list[str], max_tokens: int, headers: dict) -> dict:
    """Each (model, prompt)'s greedy answer, one request at a time (batch of one)."""
    answers = {}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=300) as http:
        for model in models:
            for prompt in PROMPTS:
                result = await one_request(http, model, prompt, max_tokens, False, None, 300)
                if result["outcome"] != "ok":
                    raise RuntimeError(f"warm-up request to {model!r} failed: {result}")
                answers[(model, prompt)] = result["text"]
    return answers


async def run_load(url: str, models: list[str], clients: int, requests: int, max_tokens: int,
                   answers: dict | None, headers: dict | None = None, timeout: float = 120.0,
                   deadline: float = 600.0) -> dict:
    """`clients` concurrent clients, each sending `requests` requests in turn; client i's j-th
    request goes to models[(i + j) % len(models)] and streams when (i + j) % 4 == 0."""
    async def client(i: int, http: httpx.AsyncClient) -> list[dict]:
        out = []
        for j in range(requests):
            model, prompt = models[(i + j) % len(models)], PROMPTS[(i * 7 + j) % len(PROMPTS)]
            expected = answers.get((model, prompt)) if answers else None
            out.append(await one_request(http, model, prompt, max_tokens, (i + j) % 4 == 0, expected, timeout))
        return out

    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, headers=headers or {}, timeout=timeout, limits=limits) as http:
        start = time.perf_counter()
        per_client = await asyncio.wait_for(asyncio.gather(*(client(i, http) for i in range(clients))), deadline)
        wall = time.perf_counter() - start
    return summarise([r for rs in per_client for r in rs], wall)


def summarise(results: list[dict], wall: float) -> dict:
    counts: dict[str, int] = {}
    for r in results:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    ok_latencies = sorted(r["latency"] for r in results if r["outcome"] in ("ok", "mismatch"))
    return {
        "requests": len(results),
        "counts": counts,
        "answered_ok": counts.get("ok", 0),
        "errors": [r.get("detail") for r in results if r["outcome"] == "error"][:10],
        "mismatches": counts.get("mismatch", 0),
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(ok_latencies) / wall, 3) if wall else None,
        "p50_s": round(_percentile(ok_latencies, 50), 4) if ok_latencies else None,
        "p99_s": round(_percentile(ok_latencies, 99), 4) if ok_latencies else None,
    }


def _percentile(sorted_values: list[float], q: float) -> float:
    if len(sorted_values) == 1:
        return sorted_values[0]
    return statistics.quantiles(sorted_values, n=100, method="inclusive")[min(98, int(q) - 1)]


# ---------------------------------------------------------------------------------------------
# Setting up a server to hit


def build_tiny_base(folder: Path) -> Path:
    """A random 2-layer Llama with SmolLM2's tokenizer (as in tests/conftest.py)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from deltatune.models.embedded import embedded_path

    tokenizer = AutoTokenizer.from_pretrained(embedded_path("smollm2-135m"))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_random_lora(base: str, out_dir: Path, seed: int) -> Path:
    """A LoRA adapter folder over `base` with random non-zero B (answers differ from the base)."""
    import torch

    from deltatune.config import ModelConfig
    from deltatune.methods.core import apply_method, save_adapter
    from deltatune.methods.lora.config import LoraConfig
    from deltatune.models.loader import load_causal_lm, resolve_model_path

    model, _ = load_causal_lm(ModelConfig(name=base))
    cfg = LoraConfig(r=8, alpha=16, targets="all-linear")
    apply_method(model, cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
    return save_adapter(model, cfg, out_dir, resolve_model_path(base))


def start_server(base: str, adapters: dict[str, Path], port: int, args) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "deltatune", "serve", "--model", base, "--model-name", "base",
           "--port", str(port), "--max-batch", str(args.max_batch), "--max-queue", str(args.max_queue)]
    for name, path in adapters.items():
        cmd += ["--adapter", f"{name}={path}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise RuntimeError("server did not come up within 180 s")


def compare(base_only: dict, switching: dict) -> dict:
    def ratio(key):
        a, b = switching.get(key), base_only.get(key)
        return round(a / b, 3) if a and b else None

    return {"requests_per_s": ratio("requests_per_s"), "p50_s": ratio("p50_s"), "p99_s": ratio("p99_s")}


async def benchmark(url: str, models: list[str], args, headers: dict) -> dict:
    answers = await expected_answers(url, models, args.max_tokens, headers)
    base_only = await run_load(url, models[:1], args.clients, args.requests, args.max_tokens, answers, headers,
                               args.timeout, args.deadline)
    switching = await run_load(url, models, args.clients, args.requests, args.max_tokens, answers, headers,
                               args.timeout, args.deadline)
    return {"base_only": base_only, "switching": switching, "switching_over_base": compare(base_only, switching)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny", help="'tiny' (random 2-layer Llama), an alias or an HF folder")
    p.add_argument("--url", help="hit this running server instead of starting one")
    p.add_argument("--models", default="base,a,b", help="with --url: base,adapter,adapter names")
    p.add_argument("--api-key", default=os.environ.get("DELTATUNE_API_KEY"))
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--requests", type=int, default=4, help="requests per client per scenario")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--max-queue", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="torch threads in the server")
    p.add_argument("--timeout", type=float, default=120.0, help="per request: longer counts as hung")
    p.add_argument("--deadline", type=float, default=900.0, help="per scenario")
    p.add_argument("--out", default="benchmarks/results/serve_load.json")
    args = p.parse_args(argv)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}

    proc = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.url:
            url, models = args.url, args.models.split(",")
        else:
            from deltatune.serve.server import free_port

            base = str(build_tiny_base(Path(tmp) / "tiny")) if args.model == "tiny" else args.model
            adapters = {n: build_random_lora(base, Path(tmp) / n, seed) for seed, n in enumerate(["a", "b"], 1)}
            port = free_port()
            proc = start_server(base, adapters, port, args)
            url, models = f"http://127.0.0.1:{port}", ["base", "a", "b"]
        try:
            results = asyncio.run(benchmark(url, models, args, headers))
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
    results["setup"] = {"model": args.model, "clients": args.clients, "requests_per_client": args.requests,
                        "max_tokens": args.max_tokens, "max_batch": args.max_batch, "max_queue": args.max_queue,
                        "server_threads": args.threads, "cpu": platform.processor() or platform.machine(),
                        "cores": os.cpu_count()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    for name in ("base_only", "switching"):
        r = results[name]
        print(f"{name:10s} {r['requests']} requests  {r['counts']}  {r['requests_per_s']} req/s  "
              f"p50 {r['p50_s']} s  p99 {r['p99_s']} s")
    print(f"switching / base_only: {results['switching_over_base']}   -> {args.out}")
    bad = sum(results[n]["counts"].get("error", 0) + results[n]["mismatches"] for n in ("base_only", "switching"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
