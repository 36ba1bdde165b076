"""`POST /v1/classify`: the server's face for `recipe: cls` runs (deltatune.classify).

    deltatune serve --classifier intents=runs/minilm_cls_lora [--model smollm2-135m --adapter ...]
    curl http://127.0.0.1:8000/v1/classify -H 'Content-Type: application/json' \\
         -d '{"model": "intents", "input": ["where is my parcel?", "I forgot my password"]}'

Request (the shape of OpenAI's embeddings / moderations: one `model`, `input` a string or a list
of strings):

    {"model": "intents", "input": "where is my parcel?" | ["...", "..."]}

Response, one entry per input in order; `scores` holds every label's probability (they sum to 1):

    {"id": "clf-...", "object": "list", "created": 1764640000, "model": "intents",
     "data": [{"object": "classification", "index": 0, "label": "delivery_status",
               "score": 0.97, "scores": {"account_access": 0.001, ..., "refund": 0.004}}],
     "usage": {"prompt_tokens": 9, "total_tokens": 9}}

Each classifier is a run dir loaded whole (its own base, adapter, head, labels.json), apart from
the generation base; it is listed by `GET /v1/models` with `"kind": "classifier"`. Its forward
passes run on the worker thread, between generation batches (one thread touches torch models).
Errors are OpenAI's shape: an unknown model 404, a generation model 400 (and a classifier asked
for chat or completions 400), empty or too many inputs 400.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request
from pydantic import BaseModel, ConfigDict, field_validator

from deltatune.errors import DeltatuneError
from deltatune.serve.protocol import APIError, model_card, new_id, parse_body
from deltatune.serve.worker import ShuttingDown

MAX_INPUTS = 256  # texts one request may classify


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    input: str | list[str]

    @field_validator("input")
    @classmethod
    def _texts(cls, value):
        texts = [value] if isinstance(value, str) else value
        if not texts:
            raise ValueError("input is an empty list; send a string or a list of strings")
        if len(texts) > MAX_INPUTS:
            raise ValueError(f"input has {len(texts)} texts; at most {MAX_INPUTS} per request")
        for i, text in enumerate(texts):
            if not text.strip():
                raise ValueError(f"input[{i}] is empty; nothing to classify")
        return value

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


@dataclass
class Served:
    name: str
    path: Path
    classifier: object  # deltatune.classify.predictor.Classifier
    created: int


class ClassifierSet:
    """name -> loaded classifier run. Loaded at start-up; read from any thread."""

    def __init__(self):
        self._items: dict[str, Served] = {}
        self._lock = threading.Lock()

    def add(self, name: str, run_dir: str | Path) -> Served:
        from deltatune.classify.predictor import Classifier, is_cls_run

        if not is_cls_run(run_dir):
            raise DeltatuneError(f"--classifier {name}={run_dir}: not a `recipe: cls` run dir (no labels.json / "
                                 f"config.yaml with recipe: cls)")
        if name in self._items:
            raise DeltatuneError(f"--classifier name {name!r} given twice")
        entry = Served(name, Path(run_dir), Classifier.load(run_dir), int(time.time()))
        with self._lock:
            self._items[name] = entry
        return entry

    def get(self, name: str) -> Served | None:
        with self._lock:
            return self._items.get(name)

    def names(self) -> list[str]:
        with self._lock:
            return list(self._items)

    def cards(self) -> list[dict]:
        with self._lock:
            items = list(self._items.values())
        cards = []
        for s in items:
            card = model_card(s.name, s.created, kind="classifier")
            card["labels"] = s.classifier.names
            cards.append(card)
        return cards


def classify_response(name: str, predictions) -> dict:
    tokens = sum(p.tokens for p in predictions)
    return {
        "id": new_id("clf"), "object": "list", "created": int(time.time()), "model": name,
        "data": [{"object": "classification", "index": i, "label": p.label, "score": p.score, "scores": p.scores}
                 for i, p in enumerate(predictions)],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def install_classify_route(app, state, read_body) -> None:
    """Add `POST /v1/classify` to the app (`read_body`: the app's size-capped body reader)."""

    @app.post("/v1/classify")
    async def classify(request: Request):
        body = parse_body(await read_body(request, state.settings.max_body_bytes), ClassifyRequest)
        served = state.classifiers.get(body.model)
        if served is None:
            if state.registry.knows(body.model):
                raise APIError(400, f"the model {body.model!r} generates text; /v1/classify serves classifiers: "
                               f"{', '.join(state.classifiers.names()) or 'none loaded (--classifier NAME=RUN_DIR)'}",
                               param="model", code="not_a_classifier")
            known = state.registry.names() + state.classifiers.names()
            raise APIError(404, f"the model {body.model!r} does not exist; loaded: {', '.join(known)}",
                           param="model", code="model_not_found")
        texts = body.texts()
        try:
            future = state.worker.call(lambda: served.classifier.predict(texts))
            predictions = await asyncio.wait_for(asyncio.wrap_future(future), timeout=state.settings.request_timeout)
        except asyncio.TimeoutError:
            raise APIError(504, f"no result within {state.settings.request_timeout:.0f} s", type="server_error",
                           code="timeout") from None
        except ShuttingDown:
            raise APIError(503, "server is shutting down", type="server_error", code="service_unavailable") from None
        except DeltatuneError as err:
            raise APIError(400, str(err), param="input") from None
        return classify_response(body.model, predictions)
