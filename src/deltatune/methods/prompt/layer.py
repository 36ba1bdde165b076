"""Prompt tuning (Lester et al. 2021, "The Power of Scale for Parameter-Efficient Prompt
Tuning", arXiv:2104.08691): P trainable embeddings put before every input.

    h = Decoder([E_prompt ; E(x)])[P:],   E_prompt: (P, H) trainable, everything else frozen

It plugs in through two documented torch module hooks on the decoder stack
(`register_forward_pre_hook` / `register_forward_hook`, `with_kwargs=True`), so every caller of
`model(...)` or `model.get_decoder()(...)` — training loss, evaluation, generation with a KV
cache, export checks, serving — gets the virtual tokens without knowing about them:

  - prefill (no cache, or an empty one): `input_ids` become `inputs_embeds` with the prompt
    in front; the attention mask gets P ones in front; explicit position ids are shifted by P
    (the virtual tokens take positions 0..P-1, as in peft, where positions count from the
    start of the whole sequence);
  - cached decoding (the cache already holds the prompt): mask and positions are shifted the
    same way, the input is left alone;
  - on the way out the P virtual positions are cut from `last_hidden_state`, so hidden states
    and logits stay aligned with the caller's tokens and labels.
"""

from __future__ import annotations


import torch
from torch import nn

from deltatune.errors import DeltatuneError
from deltatune.methods.decoder_hooks import DecoderHooksInstall, as_keywords, batch_size
from deltatune.methods.installs import copy_state
from deltatune.methods.protocol import MethodHooks

SLOT = "prompt_embeddings"  # the module's name on the model: its weight is `prompt_embeddings.weight`


class PromptEmbeddings(nn.Module):
    """The virtual tokens: a (P, H) fp32 matrix."""

    def __init__(self, initial: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(initial.detach().float().clone())  # (P, H)

    @property
    def num_tokens(self) -> int:
        return self.weight.shape[0]

    def extra_repr(self) -> str:
        return f"num_virtual_tokens={self.weight.shape[0]}, dim={self.weight.shape[1]}"


def _cache_length(kwargs: dict) -> int:
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    return int(cache.get_seq_length()) if cache is not None else 0


class PromptInstall(DecoderHooksInstall):
    """The `Installed` of prompt tuning: the embeddings live on the model as `SLOT` while
    attached, and the decoder's two hooks do the rest (see the module docstring)."""

    slot = SLOT

    def __init__(self, model: nn.Module, prompt: PromptEmbeddings):
        self.model = model
        self.prompt = prompt
        self.hooks = MethodHooks()
        self._handles: list = []
        self._strip = False  # set by the pre-hook, read by the post-hook of the same call
        self.attach()

    def slot_module(self) -> nn.Module:
        return self.prompt

    # -- the two hooks
    def _before(self, decoder: nn.Module, args: tuple, kwargs: dict):
        kwargs = as_keywords(decoder, args, kwargs, "prompt tuning")
        n = self.prompt.num_tokens
        prefill = _cache_length(kwargs) == 0
        if prefill:
            embeds = kwargs.get("inputs_embeds")
            if embeds is None:
                embeds = self.model.get_input_embeddings()(kwargs["input_ids"])  # (B, T, H)
            batch = embeds.shape[0]
            prompt = self.prompt.weight.to(embeds.dtype)[None].expand(batch, -1, -1)  # (B, P, H)
            kwargs["inputs_embeds"] = torch.cat([prompt, embeds], dim=1)  # (B, P + T, H)
            kwargs["input_ids"] = None
        else:
            batch = batch_size(kwargs, "prompt tuning")
        mask = kwargs.get("attention_mask")
        if mask is not None:
            if mask.dim() != 2:
                raise DeltatuneError("prompt tuning needs a 2-D (batch, length) attention mask")
            kwargs["attention_mask"] = torch.cat([mask.new_ones((batch, n)), mask], dim=1)  # (B, P + past + T)
        positions = kwargs.get("position_ids")
        if positions is not None:
            shifted = positions + n
            if prefill:
                virtual = torch.arange(n, device=positions.device).expand(shifted.shape[0], n)  # (B, P)
                shifted = torch.cat([virtual, shifted], dim=1)
            kwargs["position_ids"] = shifted
        self._strip = prefill
        return (), kwargs

    def _after(self, decoder: nn.Module, args: tuple, kwargs: dict, output):
        if self._strip:
            output.last_hidden_state = output.last_hidden_state[:, self.prompt.num_tokens:]  # (B, T, H)
            self._strip = False
        return output

    # -- the protocol
    def state(self) -> dict[str, torch.Tensor]:
        return {f"{SLOT}.weight": self.prompt.weight.detach()}

    def load_state(self, tensors: dict[str, torch.Tensor], where: str) -> None:
        copy_state({f"{SLOT}.weight": self.prompt.weight}, tensors, where)

    def trainable(self) -> list[nn.Parameter]:
        return [self.prompt.weight] if self.prompt.weight.requires_grad else []

    def merge(self) -> None:
        raise DeltatuneError(
            "prompt tuning adds virtual tokens to the input; there is no weight to fold them into. "
            "Serve the adapter unmerged (deltatune serve --adapter NAME=RUN_DIR)"
        )

    unmerge = merge
    merge_and_unload = merge
