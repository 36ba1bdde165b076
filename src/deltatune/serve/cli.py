"""`deltatune serve` (OpenAI-compatible HTTP server) and `deltatune chat` (terminal chat).

    deltatune serve --model smollm2-135m --adapter support=runs/support --adapter legal=runs/legal
    deltatune serve --model smollm2-135m --adapter-root runs --watch-dir runs/live --api-key S3CRET
    curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
         -d '{"model": "support", "messages": [{"role": "user", "content": "Hi"}]}'
    deltatune serve --classifier intents=runs/minilm_cls_lora      # a recipe: cls run at POST /v1/classify
    curl http://127.0.0.1:8000/v1/classify -H 'Content-Type: application/json' \\
         -d '{"model": "intents", "input": ["where is my parcel?", "I forgot my password"]}'
    deltatune chat runs/support

The server binds 127.0.0.1 unless --host says otherwise; with --api-key (or env
DELTATUNE_API_KEY) every request needs `Authorization: Bearer KEY`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from deltatune.errors import DeltatuneError


def register(subparsers) -> None:
    serve = subparsers.add_parser(
        "serve", help="OpenAI-compatible HTTP server over a base model and named adapters",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--model", help="base model to generate with: embedded alias, HF folder or hub id "
                       "(optional when only --classifier runs are served)")
    serve.add_argument("--model-name", help="name clients use for the base (default: alias or folder name)")
    serve.add_argument("--adapter", action="append", default=[], metavar="NAME=RUN_DIR",
                       help="serve a run's adapter (or an adapter folder) as model NAME; repeatable")
    serve.add_argument("--classifier", action="append", default=[], metavar="NAME=RUN_DIR",
                       help="serve a recipe: cls run at POST /v1/classify as model NAME (its own base); repeatable")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (env DELTATUNE_API_KEY)")
    serve.add_argument("--adapter-root", type=Path, help="allow POST /v1/adapters for paths inside this folder")
    serve.add_argument("--watch-dir", type=Path, help="serve every adapter folder appearing in this folder")
    serve.add_argument("--watch-interval", type=float, default=2.0, help="seconds between --watch-dir scans")
    serve.add_argument("--max-batch", type=int, default=8, help="requests generated together (same model)")
    serve.add_argument("--max-queue", type=int, default=64, help="waiting requests before 429")
    serve.add_argument("--max-tokens-cap", type=int, default=1024, help="largest max_tokens a request may ask")
    serve.add_argument("--default-max-tokens", type=int, default=256, help="max_tokens when a request omits it")
    serve.add_argument("--max-prompt-tokens", type=int, default=4096, help="longest prompt accepted")
    serve.add_argument("--max-body-bytes", type=int, default=1_000_000, help="largest request body accepted")
    serve.add_argument("--trust-remote-code", action="store_true", help="run model code shipped with the base (off by default)")
    serve.set_defaults(func=_serve)

    chat = subparsers.add_parser(
        "chat", help="interactive terminal chat with a run dir or a base model",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    chat.add_argument("target", help="run dir (base + its adapter) or base model")
    chat.add_argument("--system", help="system prompt")
    chat.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    chat.add_argument("--top-p", type=float, default=1.0)
    chat.add_argument("--max-tokens", type=int, default=256)
    chat.add_argument("--seed", type=int, default=None)
    chat.set_defaults(func=_chat)


def parse_adapters(items: list[str], flag: str = "--adapter") -> dict[str, str]:
    """["name=path", ...] -> {name: path}; duplicates and malformed items are errors."""
    adapters: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise DeltatuneError(f"{flag} {item!r} must look like NAME=RUN_DIR")
        if name in adapters:
            raise DeltatuneError(f"{flag} name {name!r} given twice")
        adapters[name] = path
    return adapters


def settings_from_args(args):
    from deltatune.serve.server import ServeSettings

    for flag in ("max_batch", "max_queue", "max_tokens_cap", "default_max_tokens", "max_prompt_tokens", "max_body_bytes"):
        if getattr(args, flag) < 1:
            raise DeltatuneError(f"--{flag.replace('_', '-')} must be >= 1")
    for flag in ("adapter_root", "watch_dir"):
        folder = getattr(args, flag)
        if folder is not None and not folder.is_dir():
            raise DeltatuneError(f"--{flag.replace('_', '-')} {folder} is not a directory")
    return ServeSettings(
        host=args.host, port=args.port,
        api_key=args.api_key or os.environ.get("DELTATUNE_API_KEY") or None,
        adapter_root=args.adapter_root, watch_dir=args.watch_dir, watch_interval=args.watch_interval,
        max_batch=args.max_batch, max_queue=args.max_queue, max_tokens_cap=args.max_tokens_cap,
        default_max_tokens=min(args.default_max_tokens, args.max_tokens_cap),
        max_prompt_tokens=args.max_prompt_tokens, max_body_bytes=args.max_body_bytes,
        trust_remote_code=args.trust_remote_code, model_name=args.model_name,
    )


def _serve(args) -> int:
    from deltatune.serve.server import build_state, serve

    settings = settings_from_args(args)
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.api_key:
        print(f"[deltatune serve] warning: listening on {settings.host} without --api-key: "
              f"anyone who can reach this port can use the model", flush=True)
    serve(build_state(args.model, parse_adapters(args.adapter), settings,
                      classifiers=parse_adapters(args.classifier, "--classifier")))
    return 0


def _chat(args) -> int:
    from deltatune.serve.chat import run_chat

    return run_chat(args)
