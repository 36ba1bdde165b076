"""The HTTP face of `deltatune serve`: an OpenAI-compatible FastAPI app over one worker.

    app = create_app(state)            # state: ServerState from deltatune.serve.server
    # GET  /v1/models                  base + every loaded adapter
    # POST /v1/chat/completions        {"model", "messages", "stream"?, "temperature"?, ...}
    # POST /v1/completions             {"model", "prompt", ...}
    # POST /v1/classify                {"model", "input": str | [str]}: a recipe: cls run's labels
    #                                  and probabilities (deltatune.serve.classify)
    # POST /v1/adapters                {"name", "path"}: load an adapter under --adapter-root
    # DELETE /v1/adapters/{name}       unload it
    # GET  /health                     liveness (no auth)

Handlers only parse, check and tokenise; generation happens on the worker thread
(`deltatune.serve.worker`). Every failure leaves as OpenAI's error JSON with a 4xx/5xx status
and never takes the server down: malformed JSON/bad fields 400, over a size cap 400/413,
missing or wrong key 401, path outside the root 403, unknown model 404, name taken 409,
queue full 429, shutting down 503.
"""

from __future__ import annotations

import asyncio
import hmac
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from deltatune.errors import DeltatuneError
from deltatune.generation import SamplingParams, chat_prompt_ids
from deltatune.serve.adapters import checked_path
from deltatune.serve.classify import install_classify_route
from deltatune.serve.protocol import (
    AdapterLoadRequest, APIError, ChatRequest, CompletionRequest, chat_chunk, chat_response,
    completion_chunk, completion_response, error_body, model_card, new_id, parse_body, sse, usage_chunk,
)
from deltatune.serve.worker import Job, QueueFull, ShuttingDown

OPEN_PATHS = {"/health"}  # reachable without the API key: says nothing but "alive"


def create_app(state) -> FastAPI:
    """The FastAPI app for a prepared `ServerState` (model loaded, worker not yet started)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.start()
        try:
            yield
        finally:
            state.stop()

    app = FastAPI(title="deltatune", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    _install_guards(app, state)
    _install_error_handlers(app)
    _install_model_routes(app, state)
    _install_generation_routes(app, state)
    install_classify_route(app, state, read_body)
    return app


# ---------------------------------------------------------------------------------------------
# Auth and errors


def _install_guards(app: FastAPI, state) -> None:
    expected = f"Bearer {state.settings.api_key}".encode() if state.settings.api_key else None

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if expected is not None and request.url.path not in OPEN_PATHS:
            given = request.headers.get("authorization", "").encode()
            # constant-time compare: response timing must not leak how much of a key matched
            if not hmac.compare_digest(given, expected):
                message = ("missing API key: send 'Authorization: Bearer KEY'" if not given
                           else "incorrect API key provided")
                return JSONResponse(error_body(message, code="invalid_api_key"), status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
        return await call_next(request)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, err: APIError):
        headers = {"Retry-After": "1"} if err.status in (429, 503) else None
        return JSONResponse(err.body(), status_code=err.status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException):
        code = "not_found" if err.status_code == 404 else None
        return JSONResponse(error_body(str(err.detail), code=code), status_code=err.status_code)

    @app.exception_handler(Exception)
    async def server_error(request: Request, err: Exception):
        return JSONResponse(error_body(f"internal error: {type(err).__name__}: {err}", type="server_error"),
                            status_code=500)


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 as soon as it passes `limit` bytes (header or actual)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"request body is {declared} bytes; the limit is {limit} (--max-body-bytes)",
                       code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"request body exceeds {limit} bytes (--max-body-bytes)",
                           code="request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


# ---------------------------------------------------------------------------------------------
# Models and adapters


def _install_model_routes(app: FastAPI, state) -> None:
    @app.get("/health")
    async def health():
        return {"status": "draining" if state.worker.closing else "ok", "queued": state.worker.queued()}

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": state.registry.cards() + state.classifiers.cards()}

    @app.get("/v1/models/{name}")
    async def get_model(name: str):
        for card in state.registry.cards() + state.classifiers.cards():
            if card["id"] == name:
                return card
        raise _unknown_model(name, state)

    @app.post("/v1/adapters")
    async def load_adapter(request: Request):
        body = parse_body(await read_body(request, state.settings.max_body_bytes), AdapterLoadRequest)
        adapter_dir = checked_path(body.path, state.settings.adapter_root)
        if state.classifiers.get(body.name) is not None:
            raise APIError(409, f"a classifier named {body.name!r} is loaded; pick another name", param="name",
                           code="model_exists")
        entry = await _on_worker(state, lambda: state.registry.add(body.name, adapter_dir, "api"))
        return model_card(entry.name, entry.created, parent=state.registry.base_name, kind="adapter")

    @app.delete("/v1/adapters/{name}")
    async def unload_adapter(name: str):
        if name == state.registry.base_name:
            raise APIError(400, "the base model cannot be unloaded", param="name")
        await _on_worker(state, lambda: state.registry.remove(name))
        return {"id": name, "object": "model", "deleted": True}


async def _on_worker(state, fn):
    """Run a model-touching function on the worker thread; map its errors to HTTP."""
    try:
        return await asyncio.wrap_future(state.worker.call(fn))
    except ShuttingDown:
        raise APIError(503, "server is shutting down", type="server_error", code="service_unavailable") from None
    except DeltatuneError as err:
        raise APIError(400, str(err), code="invalid_adapter") from None
    except (OSError, RuntimeError, ValueError, KeyError) as err:  # e.g. shapes not matching the base
        raise APIError(400, f"could not load adapter: {type(err).__name__}: {err}", code="invalid_adapter") from None


def _unknown_model(name: str, state) -> APIError:
    loaded = state.registry.names() + state.classifiers.names()
    return APIError(404, f"the model {name!r} does not exist; loaded: {', '.join(loaded)}",
                    param="model", code="model_not_found")


# ---------------------------------------------------------------------------------------------
# Generation


def _install_generation_routes(app: FastAPI, state) -> None:
    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = parse_body(await read_body(request, state.settings.max_body_bytes), ChatRequest)
        _check_model(body.model, state)
        try:
            prompt_ids = chat_prompt_ids(state.http_tokenizer, body.plain_messages())
        except Exception as err:  # unsupported content parts, templates rejecting role orders
            raise APIError(400, f"cannot render messages: {err}", param="messages") from None
        job = _submit(state, body, prompt_ids, "messages")
        rid = new_id("chatcmpl")
        if body.stream:
            return _sse_response(_chat_events(job, rid, body, state))
        return chat_response(rid, body.model, await _result(job, state))

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = parse_body(await read_body(request, state.settings.max_body_bytes), CompletionRequest)
        _check_model(body.model, state)
        prompt_ids, prompt_text = _completion_prompt(body.prompt, state)
        job = _submit(state, body, prompt_ids, "prompt")
        rid = new_id("cmpl")
        prefix = prompt_text if body.echo else ""
        if body.stream:
            return _sse_response(_completion_events(job, rid, body, prefix, state))
        return completion_response(rid, body.model, await _result(job, state), prefix=prefix)


def _check_model(name: str, state) -> None:
    if not state.registry.knows(name):
        if state.classifiers.get(name) is not None:
            raise APIError(400, f"the model {name!r} is a classifier: POST /v1/classify with "
                           f'{{"model": "{name}", "input": "..."}}', param="model", code="not_a_generator")
        raise _unknown_model(name, state)


def _completion_prompt(prompt, state) -> tuple[list[int], str]:
    tok = state.http_tokenizer
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], int):
        if any(not 0 <= t < len(tok) for t in prompt):
            raise APIError(400, f"prompt token ids must be in [0, {len(tok)})", param="prompt")
        return list(prompt), tok.decode(prompt)
    text = prompt[0] if isinstance(prompt, list) else prompt
    ids = tok(text)["input_ids"]
    if not ids:
        raise APIError(400, "prompt is empty after tokenisation", param="prompt")
    return ids, text


def sampling_params(body, prompt_len: int, settings, context_len: int | None, prompt_param: str) -> SamplingParams:
    """Request fields -> SamplingParams, enforcing the server's caps (400 when over)."""
    if prompt_len > settings.max_prompt_tokens:
        raise APIError(400, f"prompt is {prompt_len} tokens; this server accepts at most "
                       f"{settings.max_prompt_tokens} (--max-prompt-tokens)",
                       param=prompt_param, code="context_length_exceeded")
    requested = body.requested_max_tokens()
    if requested is not None and requested > settings.max_tokens_cap:
        raise APIError(400, f"max_tokens is {requested}; this server allows at most "
                       f"{settings.max_tokens_cap} (--max-tokens-cap)", param="max_tokens")
    max_new = requested or min(settings.default_max_tokens, settings.max_tokens_cap)
    if context_len is not None:
        room = context_len - prompt_len
        if room < 1:
            raise APIError(400, f"prompt is {prompt_len} tokens, the model's context is {context_len}",
                           param=prompt_param, code="context_length_exceeded")
        max_new = min(max_new, room)
    # OpenAI defaults: temperature 1, top_p 1; temperature 0 is greedy
    return SamplingParams(
        max_new_tokens=max_new,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        stop=body.stop_list(),
        seed=body.seed,
    )


def _submit(state, body, prompt_ids: list[int], prompt_param: str) -> Job:
    params = sampling_params(body, len(prompt_ids), state.settings, state.context_len, prompt_param)
    job = Job(body.model, prompt_ids, params, loop=asyncio.get_running_loop(), stream=body.stream)
    try:
        state.worker.submit(job)
    except QueueFull:
        raise APIError(429, f"server busy: {state.worker.max_queue} requests already queued; retry shortly",
                       type="rate_limit_error", code="rate_limit_exceeded") from None
    except ShuttingDown:
        raise APIError(503, "server is shutting down", type="server_error", code="service_unavailable") from None
    return job


async def _next_event(job: Job, state) -> tuple[str, object]:
    try:
        return await asyncio.wait_for(job.events.get(), timeout=state.settings.request_timeout)
    except asyncio.TimeoutError:
        job.cancelled = True
        raise APIError(504, f"no result within {state.settings.request_timeout:.0f} s",
                       type="server_error", code="timeout") from None


def _as_api_error(err: BaseException) -> APIError:
    if isinstance(err, APIError):
        return err
    if isinstance(err, ShuttingDown):
        return APIError(503, "server is shutting down", type="server_error", code="service_unavailable")
    return APIError(500, f"generation failed: {type(err).__name__}: {err}", type="server_error")


async def _result(job: Job, state):
    """Wait for a non-streamed job's Completion (or raise its error as an APIError)."""
    try:
        while True:
            kind, value = await _next_event(job, state)
            if kind == "done":
                return value
            if kind == "error":
                raise _as_api_error(value)
    except asyncio.CancelledError:
        job.cancelled = True
        raise


def _sse_response(events) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _stream(job: Job, state):
    """Yield ("delta", text) ... ("done", Completion); errors become one ("error", APIError).

    Headers (200) are already sent when streaming starts, so a failure can only be reported
    in-band: an SSE event carrying OpenAI's error object, which the clients raise."""
    try:
        while True:
            try:
                kind, value = await _next_event(job, state)
            except APIError as err:
                kind, value = "error", err
            if kind == "error":
                yield "error", _as_api_error(value)
                return
            yield kind, value
            if kind == "done":
                return
    finally:  # the client disconnected (or we finished): stop caring about this job
        job.cancelled = True


async def _chat_events(job: Job, rid: str, body: ChatRequest, state):
    yield sse(chat_chunk(rid, body.model, {"role": "assistant", "content": ""}))
    async for kind, value in _stream(job, state):
        if kind == "delta":
            yield sse(chat_chunk(rid, body.model, {"content": value}))
        elif kind == "error":
            yield sse(value.body())
        else:
            yield sse(chat_chunk(rid, body.model, {}, finish_reason=value.finish_reason))
            if body.stream_options and body.stream_options.include_usage:
                yield sse(usage_chunk(rid, body.model, "chat.completion.chunk", value))
    yield sse("[DONE]")


async def _completion_events(job: Job, rid: str, body: CompletionRequest, prefix: str, state):
    if prefix:
        yield sse(completion_chunk(rid, body.model, prefix))
    async for kind, value in _stream(job, state):
        if kind == "delta":
            yield sse(completion_chunk(rid, body.model, value))
        elif kind == "error":
            yield sse(value.body())
        else:
            yield sse(completion_chunk(rid, body.model, "", finish_reason=value.finish_reason))
            if body.stream_options and body.stream_options.include_usage:
                yield sse(usage_chunk(rid, body.model, "text_completion", value))
    yield sse("[DONE]")
