"""`deltatune chat TARGET`: talk to a fine-tuned model (run dir) or a base model in the terminal.

    deltatune chat runs/latest
    deltatune chat smollm2-135m --system "Answer briefly." --temperature 0.7

The reply streams token by token. The conversation is kept (oldest turns are dropped when it
outgrows the model's context); `/reset` starts over, `/exit` (or Ctrl-D) quits. It calls
`deltatune.generation` directly: no server involved.
"""

from __future__ import annotations

import sys
from typing import Callable

from deltatune.generation import SamplingParams, chat_prompt_ids, generate

HELP = "commands: /reset (forget the conversation), /exit (quit)"


def fit_history(messages: list[dict], tokenizer, limit: int) -> list[int]:
    """Prompt ids for `messages`, dropping the oldest user/assistant turns until the prompt
    fits `limit` tokens (a system message stays). Mutates `messages` to what was kept."""
    while True:
        ids = chat_prompt_ids(tokenizer, messages)
        first = 1 if messages and messages[0]["role"] == "system" else 0
        if len(ids) <= limit or len(messages) - first <= 1:
            return ids[-limit:]
        del messages[first : first + 2]  # one user turn and its answer


def chat_loop(model, tokenizer, params: SamplingParams, system: str | None = None,
              read: Callable[[str], str] = input, write: Callable[[str], object] = sys.stdout.write,
              context: int = 2048) -> list[dict]:
    """Run the conversation until /exit or end of input; returns the final history."""
    base = [{"role": "system", "content": system}] if system else []
    messages = list(base)
    write(f"{HELP}\n")
    while True:
        try:
            line = read("you> ").strip()
        except EOFError:
            write("\n")
            return messages
        if not line:
            continue
        if line in ("/exit", "/quit"):
            return messages
        if line == "/reset":
            messages = list(base)
            write("(conversation reset)\n")
            continue
        if line.startswith("/"):
            write(f"unknown command {line!r}; {HELP}\n")
            continue
        messages.append({"role": "user", "content": line})
        prompt = fit_history(messages, tokenizer, max(1, context - params.max_new_tokens))
        write("bot> ")
        [done] = generate(model, tokenizer, [prompt], [params], on_token=lambda _i, delta: _flush(write, delta))
        write("\n")
        messages.append({"role": "assistant", "content": done.text})


def _flush(write, text: str) -> None:
    write(text)
    if hasattr(sys.stdout, "flush"):
        sys.stdout.flush()


def run_chat(args) -> int:
    """Entry point of `deltatune chat`."""
    from deltatune.classify.predictor import is_cls_run
    from deltatune.errors import DeltatuneError
    from deltatune.models.runs import load_target

    if is_cls_run(args.target):
        raise DeltatuneError(f"{args.target} is a classifier (recipe: cls), it does not chat: "
                             f'deltatune generate {args.target} "TEXT" prints its label, or serve it with '
                             f"deltatune serve --classifier NAME={args.target}")
    loaded = load_target(args.target)
    context = getattr(loaded.model.config, "max_position_embeddings", None) or 2048
    params = SamplingParams(max_new_tokens=args.max_tokens, temperature=args.temperature,
                            top_p=args.top_p, seed=args.seed)
    print(f"[deltatune chat] {loaded.label}", flush=True)
    try:
        chat_loop(loaded.model, loaded.tokenizer, params, system=args.system, context=context)
    except KeyboardInterrupt:
        print()
    return 0
