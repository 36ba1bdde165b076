"""Record formats -> one internal shape: a conversation (list of {role, content}) or raw text.

    fmt = detect_format(records)                  # "alpaca" | "messages" | "text"
    conv = to_conversation(record, fmt)           # [{"role": "user", ...}, ...] or "raw text"
    prompt = qa_prompt_messages(record, system)   # the turns that ask a QA record's question

Formats:
- `alpaca`: `instruction`, `output`, optional `input` (appended to the instruction after a
  blank line), optional `system`, optional `history` = [[user, assistant], ...] earlier turns.
- `messages`: OpenAI `messages` = [{role, content}], or ShareGPT `conversations` =
  [{from, value}] with from in human/gpt/system (user/assistant also accepted); an optional
  top-level `system` string is put first.
- `text`: a raw `text` field (continued pre-training).
Every error names the missing/bad field and the record's origin (file:line).
"""

from __future__ import annotations

from deltatune.data.sources import origin
from deltatune.errors import DeltatuneError

Conversation = list[dict]  # [{"role": "system"|"user"|"assistant", "content": str}, ...]

FORMATS = ("alpaca", "messages", "text")
ROLES = ("system", "user", "assistant")
# ShareGPT speaker names -> OpenAI roles
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "chatgpt": "assistant", "bing": "assistant", "bard": "assistant"}


def detect_format(records: list[dict]) -> str:
    """The format of a dataset, from the keys of its first record."""
    first = records[0]
    if "messages" in first or "conversations" in first:
        return "messages"
    if "instruction" in first:
        return "alpaca"
    if "text" in first:
        return "text"
    keys = sorted(k for k in first if not k.startswith("_"))
    raise DeltatuneError(
        f"{origin(first)}: cannot detect the data format from keys {keys}; expected "
        f"'instruction'+'output' (alpaca), 'messages' or 'conversations' (chat), or 'text' (raw). "
        f"Set data.format to say which."
    )


def resolve_format(records: list[dict], fmt: str = "auto") -> str:
    if fmt == "auto":
        return detect_format(records)
    if fmt not in FORMATS:
        raise DeltatuneError(f"unknown data format {fmt!r}; use auto, {', '.join(FORMATS)}")
    return fmt


def to_conversation(record: dict, fmt: str) -> Conversation | str:
    """One record as a conversation (alpaca, messages) or raw text (text)."""
    if fmt == "alpaca":
        return _alpaca(record)
    if fmt == "messages":
        return _messages(record)
    if fmt == "text":
        return _field(record, "text")
    raise DeltatuneError(f"unknown data format {fmt!r}; use auto, {', '.join(FORMATS)}")


def alpaca_user_text(record: dict) -> str:
    """The user turn of an alpaca record: instruction, then the input after a blank line."""
    instruction = _field(record, "instruction")
    extra = record.get("input") or ""
    if not isinstance(extra, str):
        raise DeltatuneError(f"{origin(record)}: field 'input' must be a string, got {type(extra).__name__}")
    return f"{instruction}\n\n{extra}" if extra.strip() else instruction


def qa_prompt_messages(record: dict, system_prompt: str | None = None) -> Conversation:
    """The chat turns to generate an answer from: optional system, history, then the question.

    Works for alpaca-shaped QA records and for `messages` records (every turn before the
    last assistant turn). `system_prompt` is put first unless the record has its own.
    """
    messages: Conversation = []
    if "messages" in record:
        turns = list(record["messages"])
        if turns and turns[-1].get("role") == "assistant":
            turns = turns[:-1]
        messages = [{"role": t["role"], "content": t["content"]} for t in turns]
    else:
        if record.get("system"):
            messages.append({"role": "system", "content": record["system"]})
        for user, assistant in record.get("history") or []:
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        messages.append({"role": "user", "content": alpaca_user_text(record)})
    if system_prompt is not None and not (messages and messages[0]["role"] == "system"):
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def _alpaca(record: dict) -> Conversation:
    conv: Conversation = []
    system = record.get("system")
    if system:
        conv.append({"role": "system", "content": _field(record, "system")})
    history = record.get("history") or []
    if not isinstance(history, list):
        raise DeltatuneError(f"{origin(record)}: field 'history' must be a list of [user, assistant] pairs")
    for i, pair in enumerate(history):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(s, str) for s in pair)):
            raise DeltatuneError(f"{origin(record)}: history[{i}] must be a [user, assistant] pair of strings")
        conv += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    conv.append({"role": "user", "content": alpaca_user_text(record)})
    conv.append({"role": "assistant", "content": _field(record, "output")})
    return conv


def _messages(record: dict) -> Conversation:
    if "messages" in record:
        key, role_key, text_key, names = "messages", "role", "content", {r: r for r in ROLES}
    elif "conversations" in record:
        key, role_key, text_key, names = "conversations", "from", "value", SHAREGPT_ROLES
    else:
        raise DeltatuneError(f"{origin(record)}: missing required field 'messages' (or ShareGPT 'conversations')")
    turns = record[key]
    if not isinstance(turns, list) or not turns:
        raise DeltatuneError(f"{origin(record)}: field '{key}' must be a non-empty list of turns")
    conv: Conversation = []
    system = record.get("system")
    if isinstance(system, str) and system.strip():
        conv.append({"role": "system", "content": system})
    for i, turn in enumerate(turns):
        where = f"{origin(record)}: {key}[{i}]"
        if not isinstance(turn, dict):
            raise DeltatuneError(f"{where} must be an object with '{role_key}' and '{text_key}'")
        for field in (role_key, text_key):
            if field not in turn:
                raise DeltatuneError(f"{where}: missing required field '{field}'")
        role = names.get(str(turn[role_key]).lower())
        if role is None:
            raise DeltatuneError(f"{where}: unknown {role_key} {turn[role_key]!r}; use one of {sorted(set(names))}")
        if not isinstance(turn[text_key], str):
            raise DeltatuneError(f"{where}: '{text_key}' must be a string")
        conv.append({"role": role, "content": turn[text_key]})
    return conv


def _field(record: dict, name: str) -> str:
    if name not in record or record[name] is None:
        raise DeltatuneError(f"{origin(record)}: missing required field '{name}'")
    value = record[name]
    if not isinstance(value, str):
        raise DeltatuneError(f"{origin(record)}: field '{name}' must be a string, got {type(value).__name__}")
    return value
