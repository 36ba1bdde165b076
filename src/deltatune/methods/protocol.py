"""The method protocol: what every fine-tuning method provides, and all that core and the loop call.

A method is one object (`Method`) in the registry. Installing it on a model returns an
`Installed` — the method living on that one model — and everything afterwards (train, save,
resume, merge, switch off for a reference forward, hot-swap in a server) goes through that
object. Core, the training loop, export and serving never look at a method's name or kind.

    installed = METHODS["lora"].install(model, cfg, InstallContext(tokenizer=tok))
    state = installed.state()           # {model-relative name: tensor}: trainables + buffers
    installed.load_state(state)         # back in, shapes checked
    installed.detach(); installed.attach()   # the model computes the base / the method again
    installed.merge()                   # fold into the base weights (or DeltatuneError: cannot)
    installed.hooks.after_optimizer_step     # optional per-step update (None when unused)

How a method changes what the model computes is its own business — wrapper modules swapped in
around Linears (LoRA, IA3), the base's own parameters trained (full, freeze), or module hooks
that change the decoder's inputs (prompt tuning) — as long as plain `model(...)` and
`model.get_decoder()(...)` compute the adapted function while it is attached. That is what
lets one forward path (`deltatune.forward`) serve training, evaluation, generation, export
checks and serving.

Names in `state()` are the model's own dotted names of the tensors (e.g.
`model.layers.0.self_attn.q_proj.lora_A.weight`), so checkpoints need no method knowledge. A
method with a PEFT twin maps them to PEFT's keys in its `PeftTwin`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from pydantic import BaseModel
from torch import nn


@dataclass
class InstallContext:
    """What install may need besides the model and config.

    tokenizer:   for methods initialised from text (prompt tuning's `init_text`)
    initialise:  False when the state is about to be loaded from disk: skip expensive or
                 data-dependent initialisation
    shared_base: the base is shared by several adapters (serving): never write into its
                 tensors; keep the method's own copies and swap them in on `attach`
    """

    tokenizer: Any = None
    initialise: bool = True
    shared_base: bool = False


@dataclass
class MethodHooks:
    """Optional per-method hooks the training building blocks call (None: not used).

    extra_loss():                  a scalar added to each step's loss (e.g. a regulariser),
                                   already weighted as the method wants
    after_optimizer_step(step):    runs after every optimiser step, under no_grad, before the
                                   gradients are cleared (masks, rank budgets from gradient
                                   sensitivities, base-weight updates); `step` = optimiser
                                   steps completed
    param_groups(train_cfg):       AdamW parameter groups ({"params", "lr", "weight_decay"})
                                   instead of the default decay / no-decay split
    begin(total_steps):            once, when the optimiser is built: the run's optimiser-step
                                   budget (schedules that count from the end, e.g. AdaLoRA's)
    report():                      a JSON-able dict about the finished adaptation (final ranks,
                                   mask sizes), written to eval.json as `method_report`
    prepare(batches):              once, on a fresh run (not on resume: the state then comes
                                   from the checkpoint), before the optimiser is built, with the
                                   run's training batches in training order: data-dependent
                                   initialisation (FISH Mask's Fisher); returns a summary dict
    """

    extra_loss: Callable[[], torch.Tensor] | None = None
    after_optimizer_step: Callable[[int], None] | None = None
    param_groups: Callable[[Any], list[dict]] | None = None
    begin: Callable[[int], None] | None = None
    report: Callable[[], dict] | None = None
    prepare: Callable[[Iterable[dict]], dict | None] | None = None


@runtime_checkable
class Installed(Protocol):
    """A method installed on one model (see the module docstring)."""

    hooks: MethodHooks

    def state(self) -> dict[str, torch.Tensor]:
        """Everything that makes this adaptation: trainable tensors and persistent buffers,
        keyed by their names in the model. Detached, not copied."""

    def load_state(self, tensors: dict[str, torch.Tensor], where: str) -> None:
        """Copy saved tensors in (names and shapes must match exactly; `where` names the
        source in the error)."""

    def trainable(self) -> list[nn.Parameter]:
        """The parameters the optimiser updates."""

    def detach(self) -> None:
        """Switch the method off: the model computes the base function again (modules swapped
        back, hooks removed, parameter data pointed back at the base). Reversible."""

    def attach(self) -> None:
        """Switch it back on after `detach`."""

    def merge(self) -> None:
        """Fold the update into the base weights (forward then skips the method's own path),
        or raise DeltatuneError saying why this method cannot be merged."""

    def unmerge(self) -> None:
        """Undo `merge`."""

    def merge_and_unload(self) -> None:
        """Fold for good and leave a plain model behind (no method modules or hooks)."""


@dataclass(frozen=True)
class PeftTwin:
    """How a method maps onto HF peft's adapter folder (adapter_config.json +
    adapter_model.safetensors), both ways."""

    peft_type: str  # adapter_config.json's peft_type, e.g. "LORA"
    config: Callable[[nn.Module, BaseModel, Installed, str], dict]  # (model, cfg, installed, base path)
    from_config: Callable[[dict, str], BaseModel]  # (raw adapter_config, where) -> our config
    to_key: Callable[[str], str]  # our state name -> the tensor key peft stores
    from_key: Callable[[str], str]  # and back
    # a plain peft folder of `peft_type` is this method's when this says so (several methods
    # share peft_type "LORA": plain LoRA, DoRA with `use_dora`); default: every folder of the type
    accepts: Callable[[dict], bool] = lambda raw: True


@dataclass(frozen=True)
class Method:
    """One row of the registry.

    install(model, cfg, ctx) -> Installed: called after core froze every parameter; must raise
    DeltatuneError before changing anything when the config does not fit the model (targets
    matching nothing, sizes out of range), naming the config key.
    trains_base_weights: the base's own weights change (full, freeze): they are loaded in fp32
    (master weights) and have no switched-off state without a copy.
    mergeable: `merge` works (False: it raises and `deltatune merge` refuses before loading).
    save_as: see the field's comment.
    load_base(model_cfg, device, dtype, method_cfg) -> (model, tokenizer): how to load the base
    this method trains against, when that is not the plain `deltatune.models.loader.load_causal_lm`
    (e.g. a quantised base, `method_cfg.bits` wide); used by training, `deltatune merge` and the
    peft export's check, so a merge folds the update into the weights it was trained against.
    """

    name: str
    config_cls: type[BaseModel]
    install: Callable[[nn.Module, BaseModel, InstallContext], Installed]
    trains_base_weights: bool = False
    mergeable: bool = True
    peft: PeftTwin | None = None
    load_base: Callable[..., tuple] | None = None
    summary: str = ""  # one line for help texts and the README table
    # what to raise when a run learnt too little for lack of capacity (the "did not learn"
    # advice); "" for methods that already train every weight
    capacity_hint: str = ""
    # load_base lets go of the checkpoint's memory-mapped file (deltatune.models.file_pages), so
    # on a CPU only the tensors as held are resident (what `deltatune estimate` counts)
    releases_file_pages: bool = False
    # save_as(cfg, state) -> (cfg, state): what a finished adaptation is written to an adapter
    # folder as, when not its own config and state (PiSSA / OLoRA: a plain LoRA of rank 2r that
    # applies to the original base); checkpoints keep the method's own state
    save_as: Callable[[BaseModel, dict], tuple[BaseModel, dict]] | None = None
