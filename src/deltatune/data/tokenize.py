"""Conversations -> token ids + labels, with the loss on assistant tokens only.

    ds = build_sft_dataset(load_records("builtin:orgfacts/train"), tokenizer, cfg.data)
    ds.examples[0]  # {"input_ids": [...], "labels": [-100, ..., 412, 2]}
    ds.stats        # count, truncated, dropped, lengths, trained_tokens, total_tokens

How the mask is found: the chat template is rendered for growing prefixes of the
conversation (up to each turn; before each assistant turn with the generation prompt), so the
text splits into segments that are either prompt or assistant reply. Each segment is tokenised
on its own and the concatenation is checked against tokenising the full rendering; if a
tokenizer merges across a boundary, labels come from character offsets instead. The assistant
segment is trained up to and including its end token (`<|im_end|>` / EOS), so the model learns
to stop; the template's separator after it (a newline) is not. A tokenizer without a chat
template gets a plain `### User:` / `### Assistant:` layout.

`data.system_prompt` fills in a system turn when a record has none (SmolLM2's template would
otherwise inject its default "You are a helpful AI assistant named SmolLM..."); a record's
own system turn always wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from deltatune.data.formats import Conversation, resolve_format, to_conversation
from deltatune.data.labels import IGNORE_INDEX
from deltatune.data.sources import origin
from deltatune.errors import DeltatuneError

PLAIN_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}


@dataclass
class TokenizedDataset:
    """Tokenised examples plus what happened on the way (for reports and run logs)."""

    examples: list[dict]  # {"input_ids": list[int], "labels": list[int]}
    stats: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict:
        return self.examples[i]

    @property
    def lengths(self) -> list[int]:
        return [len(ex["input_ids"]) for ex in self.examples]


# ---------------------------------------------------------------------------------------------
# Rendering


def render_chat(tokenizer, messages: Conversation, add_generation_prompt: bool = False) -> str:
    """The conversation as text: the tokenizer's chat template, or a plain fallback layout."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    eos = tokenizer.eos_token or ""
    bos = tokenizer.bos_token if tokenizer.bos_token and tokenizer.bos_token != eos else ""
    parts = [bos]
    for m in messages:
        end = eos if m["role"] == "assistant" else ""
        parts.append(f"### {PLAIN_ROLES.get(m['role'], m['role'].title())}:\n{m['content']}{end}\n\n")
    if add_generation_prompt:
        parts.append("### Assistant:\n")
    return "".join(parts)


def with_system_prompt(conv: Conversation, system_prompt: str | None) -> Conversation:
    """Put `system_prompt` first unless the conversation already has a system turn."""
    if system_prompt is None or (conv and conv[0]["role"] == "system"):
        return conv
    return [{"role": "system", "content": system_prompt}, *conv]


def conversation_segments(tokenizer, conv: Conversation, train_on_prompt: bool = False) -> list[tuple[str, bool]]:
    """Split the rendered conversation into (text, trained) pieces whose concatenation is it.

    An assistant turn yields its content + end token (trained) and the separator after the end
    token (trained only with train_on_prompt); the final separator is dropped so every example
    ends on the end token.
    """
    eos = tokenizer.eos_token or ""
    segments: list[tuple[str, bool]] = []
    done = ""  # text rendered so far; every later rendering must extend it
    for i, message in enumerate(conv):
        if message["role"] == "assistant":
            head = render_chat(tokenizer, conv[:i], add_generation_prompt=True) if i else ""
            _require_prefix(done, head, conv)
            segments.append((head[len(done):], train_on_prompt))
            done = head
        full = render_chat(tokenizer, conv[: i + 1])
        _require_prefix(done, full, conv)
        piece = full[len(done):]
        if message["role"] == "assistant":
            # cut after the last end token in the reply: the reply + its stop token are trained
            cut = piece.rfind(eos) + len(eos) if eos and eos in piece else len(piece)
            segments += [(piece[:cut], True), (piece[cut:], train_on_prompt)]
        else:
            segments.append((piece, train_on_prompt))
        done = full
    if conv and conv[-1]["role"] == "assistant" and segments and not segments[-1][1]:
        segments.pop()  # the template's newline after the final end token: not needed
    return [(text, trained) for text, trained in segments if text]


def _require_prefix(done: str, rendered: str, conv: Conversation) -> None:
    if not rendered.startswith(done):
        raise DeltatuneError(
            "the tokenizer's chat template does not render conversation prefixes consistently "
            "(a later rendering changes earlier text), so the prompt/response mask cannot be "
            "found; use a model whose template appends turns, or set data.train_on_prompt: true"
        )


def tokenize_segments(tokenizer, segments: list[tuple[str, bool]]) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for (text, trained) segments; labels are IGNORE_INDEX where untrained."""
    ids: list[int] = []
    labels: list[int] = []
    for text, trained in segments:
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        labels += piece if trained else [IGNORE_INDEX] * len(piece)
    full_text = "".join(text for text, _ in segments)
    full = tokenizer(full_text, add_special_tokens=False)["input_ids"]
    if full == ids:
        return ids, labels
    # The tokenizer merged tokens across a segment boundary: label by character offsets.
    return _labels_from_offsets(tokenizer, segments, full_text)


def _labels_from_offsets(tokenizer, segments, full_text) -> tuple[list[int], list[int]]:
    if not getattr(tokenizer, "is_fast", False):
        raise DeltatuneError("segment tokenisation differs from the full rendering and the tokenizer is not a fast one")
    enc = tokenizer(full_text, add_special_tokens=False, return_offsets_mapping=True)
    spans, pos = [], 0
    for text, trained in segments:
        if trained:
            spans.append((pos, pos + len(text)))
        pos += len(text)
    labels = []
    for tok, (start, _end) in zip(enc["input_ids"], enc["offset_mapping"]):
        inside = any(a <= start < b for a, b in spans)
        labels.append(tok if inside else IGNORE_INDEX)
    return list(enc["input_ids"]), labels


def encode_conversation(tokenizer, conv: Conversation, train_on_prompt: bool = False) -> tuple[list[int], list[int]]:
    """Token ids and labels of one conversation; the last token is the trained end token."""
    ids, labels = tokenize_segments(tokenizer, conversation_segments(tokenizer, conv, train_on_prompt))
    eos_id = tokenizer.eos_token_id
    if eos_id is not None and conv[-1]["role"] == "assistant" and (not ids or ids[-1] != eos_id):
        ids, labels = ids + [eos_id], labels + [eos_id]  # template without a stop token
    return ids, labels


# ---------------------------------------------------------------------------------------------
# Datasets


def build_sft_dataset(records: list[dict], tokenizer, data_cfg) -> TokenizedDataset:
    """Tokenise records for supervised fine-tuning; truncate, count, drop empty-response ones."""
    if not records:
        raise DeltatuneError("the dataset is empty (no records); nothing to train on")
    fmt = resolve_format(records, getattr(data_cfg, "format", "auto"))
    if fmt == "text":
        return build_text_dataset(records, tokenizer, data_cfg)
    max_length = data_cfg.max_length
    train_on_prompt = getattr(data_cfg, "train_on_prompt", False)
    system_prompt = getattr(data_cfg, "system_prompt", None)
    examples, truncated, dropped = [], 0, 0
    for record in records:
        conv = with_system_prompt(to_conversation(record, fmt), system_prompt)
        if not train_on_prompt and not any(m["role"] == "assistant" for m in conv):
            raise DeltatuneError(f"{origin(record)}: the conversation has no assistant turn to train on")
        ids, labels = encode_conversation(tokenizer, conv, train_on_prompt)
        if len(ids) > max_length:
            truncated += 1
            ids, labels = ids[:max_length], labels[:max_length]
            if all(label == IGNORE_INDEX for label in labels):
                dropped += 1  # the whole response fell past max_length: nothing to learn
                continue
        examples.append({"input_ids": ids, "labels": labels})
    if not examples:
        raise DeltatuneError(
            f"all {len(records)} examples were truncated to zero response tokens at "
            f"data.max_length={max_length}; raise data.max_length or shorten the prompts"
        )
    return TokenizedDataset(examples, _stats(examples, fmt, max_length, truncated, dropped))


def build_text_dataset(records: list[dict], tokenizer, data_cfg) -> TokenizedDataset:
    """Raw text for continued pre-training: text + EOS, every token trained.

    `data_cfg.pack`: concatenate all documents and cut into `max_length` blocks (no padding
    wasted; the last block may be shorter); otherwise one example per record, truncated.
    """
    if not records:
        raise DeltatuneError("the dataset is empty (no records); nothing to train on")
    max_length = data_cfg.max_length
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    docs = [tokenizer(to_conversation(r, "text"), add_special_tokens=False)["input_ids"] + eos for r in records]
    docs = [d for d in docs if d]
    if getattr(data_cfg, "pack", False):
        stream = [tok for doc in docs for tok in doc]
        blocks = [stream[i : i + max_length] for i in range(0, len(stream), max_length)]
        truncated = 0
    else:
        blocks = [d[:max_length] for d in docs]
        truncated = sum(len(d) > max_length for d in docs)
    examples = [{"input_ids": b, "labels": list(b)} for b in blocks if b]
    if not examples:
        raise DeltatuneError("the text dataset produced no tokens; check the 'text' fields")
    return TokenizedDataset(examples, _stats(examples, "text", max_length, truncated, 0))


def _stats(examples: list[dict], fmt: str, max_length: int, truncated: int, dropped: int) -> dict:
    lengths = [len(ex["input_ids"]) for ex in examples]
    return {
        "format": fmt,
        "count": len(examples),
        "truncated": truncated,
        "dropped": dropped,
        "max_length": max_length,
        "lengths": lengths,
        "total_tokens": sum(lengths),
        "trained_tokens": sum(sum(label != IGNORE_INDEX for label in ex["labels"]) for ex in examples),
    }
