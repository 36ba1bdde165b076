"""Short load test: 16 concurrent clients x 2 requests (a quarter streamed, adapters rotating)
against a real server with a small queue. Every request must be answered correctly or
refused cleanly (429/503 with an OpenAI error body); no errors, no hung connections."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "serve_load.py"


@pytest.fixture(scope="module")
def serve_load():
    spec = importlib.util.spec_from_file_location("serve_load", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("max_queue", [64, 6], ids=["roomy-queue", "small-queue"])
def test_concurrent_clients_get_answers_or_clean_refusals(tiny_llama_dir, adapter_root, serve_load, max_queue):
    from deltatune.serve.server import ServeSettings, build_state, start_in_thread

    settings = ServeSettings(model_name="base", max_batch=4, max_queue=max_queue, max_tokens_cap=32)
    adapters = {"a": str(adapter_root / "alpha"), "b": str(adapter_root / "beta")}
    handle = start_in_thread(build_state(str(tiny_llama_dir), adapters, settings))
    try:
        models = ["base", "a", "b"]
        answers = asyncio.run(serve_load.expected_answers(handle.url, models, 8, {}))
        result = asyncio.run(serve_load.run_load(handle.url, models, clients=16, requests=2, max_tokens=8,
                                                 answers=answers, timeout=60, deadline=240))
    finally:
        handle.stop()
    counts = result["counts"]
    assert result["requests"] == 32
    assert set(counts) <= {"ok", "429", "503"}, result
    assert counts.get("ok", 0) >= 1
    if max_queue >= 32:
        assert counts == {"ok": 32}  # everything fits in the queue: nothing refused
    else:
        assert counts.get("429", 0) >= 1  # 16 clients vs a queue of 6: some are turned away
    assert handle.state.worker.stats["max_batch_seen"] > 1  # requests really were batched
