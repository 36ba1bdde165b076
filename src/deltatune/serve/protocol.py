"""The OpenAI wire format: request schemas, the error shape and response/chunk builders.

Nothing here touches the model: `app.py` parses a body with `parse_body`, turns it into token
ids and `SamplingParams`, and shapes what the worker produced with the `*_response` / `*_chunk`
builders. Every error leaves the server as OpenAI's shape,

    {"error": {"message": "...", "type": "invalid_request_error", "param": "max_tokens", "code": null}}

so the official clients raise their usual exception classes (BadRequestError, NotFoundError...).
Unknown request fields are ignored (clients send `user`, `logprobs: false` and friends), but
fields that would change the answer and that we cannot honour (`n > 1`) are rejected.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ADAPTER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class APIError(Exception):
    """An HTTP error with an OpenAI-shaped body; raise it anywhere in a request handler."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# ---------------------------------------------------------------------------------------------
# Request schemas


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ContentPart(_Body):
    type: str
    text: str | None = None


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        """Plain text of the message; only text parts are supported (no images)."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        texts = []
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise ValueError(f"content part type {part.type!r} is not supported (text only)")
            texts.append(part.text)
        return "".join(texts)


class StreamOptions(_Body):
    include_usage: bool = False


class _Sampling(_Body):
    model: str
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None

    @field_validator("n")
    @classmethod
    def _only_one(cls, value):
        if value is not None and value != 1:
            raise ValueError("only n=1 is supported")
        return value

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value):
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # the newer name for max_tokens

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def plain_messages(self) -> list[dict]:
        """[{role, content}] with `developer` folded into `system` (chat templates know only that)."""
        out = []
        for msg in self.messages:
            role = "system" if msg.role == "developer" else msg.role
            out.append({"role": role, "content": msg.text()})
        return out


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int]
    echo: bool = False

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value):
        if isinstance(value, list) and value and isinstance(value[0], str) and len(value) != 1:
            raise ValueError("one prompt per request is supported (send a string)")
        if isinstance(value, list) and not value:
            raise ValueError("prompt must not be empty")
        return value


class AdapterLoadRequest(_Body):
    name: str = Field(pattern=ADAPTER_NAME_PATTERN)
    path: str = Field(min_length=1)


def parse_body(raw: bytes, schema: type[BaseModel]) -> Any:
    """Bytes -> validated request; malformed JSON or a bad field -> APIError(400) naming it."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise APIError(400, f"request body is not valid JSON: {err}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, "request body must be a JSON object", code="invalid_json")
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "string_pattern_mismatch" and param == "name":
            message = ("adapter name must be 1-64 characters of letters, digits, '_', '.', '-', "
                       "starting with a letter or digit")
        raise APIError(400, f"invalid '{param}': {message}", param=param) from None


# ---------------------------------------------------------------------------------------------
# Response builders


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_response(rid: str, model: str, completion) -> dict:
    return {
        "id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": completion.text},
                     "finish_reason": completion.finish_reason, "logprobs": None}],
        "usage": usage(completion.prompt_tokens, completion.completion_tokens),
    }


def chat_chunk(rid: str, model: str, delta: dict, finish_reason: str | None = None) -> dict:
    return {
        "id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
    }


def completion_response(rid: str, model: str, completion, prefix: str = "") -> dict:
    return {
        "id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "text": prefix + completion.text, "logprobs": None,
                     "finish_reason": completion.finish_reason}],
        "usage": usage(completion.prompt_tokens, completion.completion_tokens),
    }


def completion_chunk(rid: str, model: str, text: str, finish_reason: str | None = None) -> dict:
    return {
        "id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}],
    }


def usage_chunk(rid: str, model: str, obj: str, completion) -> dict:
    """The extra last chunk `stream_options: {include_usage: true}` asks for (empty choices)."""
    return {"id": rid, "object": obj, "created": int(time.time()), "model": model, "choices": [],
            "usage": usage(completion.prompt_tokens, completion.completion_tokens)}


def model_card(name: str, created: int, parent: str | None = None, kind: str = "base") -> dict:
    """An OpenAI model object; `parent`/`kind` say what an adapter sits on (extra fields)."""
    return {"id": name, "object": "model", "created": created, "owned_by": "deltatune",
            "parent": parent, "kind": kind}


def sse(payload: dict | str) -> bytes:
    """One server-sent event: `data: {...}\\n\\n` (or the `[DONE]` sentinel)."""
    text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {text}\n\n".encode()
