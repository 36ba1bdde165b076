"""BitFit (Ben Zaken et al. 2022, arXiv:2106.10199): only the bias terms of chosen Linears train.

    method: {name: bitfit}                                # every Linear but the LM head
    from deltatune.methods.bitfit import METHOD           # the registry row

Llama-family models have no biases: each targeted Linear without one gets a zero-initialised
bias (so the model is unchanged at step 0; install says so in the log); biases that exist
train as they are (see `layer.BitFitLinear`). Trainable count: the sum of the targets'
output sizes.

A merged model keeps the biases as `<module>.bias` tensors: its state dict is the base's plus
exactly those keys. For plain `transformers` to load a saved merged Llama, its config must
declare them: `LlamaConfig.attention_bias` gives q/k/v/o_proj a bias in every layer and
`mlp_bias` gives gate/up/down_proj one. `merge_and_unload` sets a flag when the targets make it
exact (every one of those projections in every layer targeted); with any other selection
(e.g. only q_proj and v_proj) no config flag describes the model, the flag stays unset and
the log says so: transformers would then drop the added biases as unexpected keys, so target
whole groups (all attention projections / all MLP projections) for a merged export, or serve
the adapter unmerged.
"""

from __future__ import annotations

from torch import nn

from deltatune.errors import DeltatuneError
from deltatune.methods.bitfit.config import BitFitConfig
from deltatune.methods.bitfit.layer import BitFitLinear
from deltatune.methods.installs import WrapperInstall
from deltatune.methods.modules import match_linear_targets
from deltatune.methods.protocol import InstallContext, Method, MethodHooks
from deltatune.training.progress import say

__all__ = ["METHOD", "BitFitConfig", "BitFitInstall", "BitFitLinear", "bias_config_flags", "install_bitfit"]

# LlamaConfig flags -> (the parent module's name, the Linears that flag gives a bias)
BIAS_FLAGS = {
    "attention_bias": ("self_attn", ("q_proj", "k_proj", "v_proj", "o_proj")),
    "mlp_bias": ("mlp", ("gate_proj", "up_proj", "down_proj")),
}


def bias_config_flags(model: nn.Module, added: list[str]) -> tuple[dict[str, bool], list[str]]:
    """({config flag: True} that exactly describe the biases `added` (module names that got a
    new bias), [added modules no flag describes]). A flag is exact when the model's config has
    it and every Linear it covers, in every layer, is among `added`."""
    config = getattr(model, "config", None)
    linears = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    flags: dict[str, bool] = {}
    covered: set[str] = set()
    for flag, (parent, leaves) in BIAS_FLAGS.items():
        group = {n for n in linears if n.rsplit(".", 2)[-2:-1] == [parent] and n.rsplit(".", 1)[-1] in leaves}
        if config is not None and hasattr(config, flag) and group and group <= set(added):
            flags[flag] = True
            covered |= group
    return flags, [n for n in added if n not in covered]


class BitFitInstall(WrapperInstall):
    """`WrapperInstall` whose `merge_and_unload` also declares the added biases in the
    model's config where a flag says exactly that (see the module docstring)."""

    def added_biases(self) -> list[str]:
        return [name for name, w in self.wrappers.items() if w.adds_bias]

    def merge_and_unload(self) -> None:
        super().merge_and_unload()
        flags, uncovered = bias_config_flags(self.model, self.added_biases())
        for flag, value in flags.items():
            setattr(self.model.config, flag, value)
        if uncovered:
            say(f"bitfit: the merged model has biases on {len(uncovered)} Linears that no config flag "
                f"describes (e.g. {uncovered[0]}); transformers would drop them when loading a saved copy. "
                f"Target all of {'/'.join(BIAS_FLAGS['attention_bias'][1])} and/or "
                f"{'/'.join(BIAS_FLAGS['mlp_bias'][1])} for an exact export, or serve the adapter unmerged")

    def report(self) -> dict:
        flags, uncovered = bias_config_flags(self.model, self.added_biases())
        return {"biases_trained": len(self.wrappers), "biases_added": len(self.added_biases()),
                "merged_config_flags": sorted(flags), "biases_no_config_flag_covers": len(uncovered)}


def install_bitfit(model: nn.Module, cfg: BitFitConfig, ctx: InstallContext) -> BitFitInstall:
    """A BitFitLinear (bias delta of zeros, requires grad) around every target; bases untouched."""
    names = match_linear_targets(model, cfg.targets, key="method.targets")  # raises before any change
    for name in names:
        if type(model.get_submodule(name)) is not nn.Linear:
            raise DeltatuneError(f"method.targets: BitFit supports nn.Linear only; {name} is "
                                 f"{type(model.get_submodule(name)).__name__}")
    wrappers = {name: BitFitLinear(model.get_submodule(name)) for name in names}
    installed = BitFitInstall(model, wrappers)
    installed.hooks = MethodHooks(report=installed.report)
    added = installed.added_biases()
    if ctx.initialise and added:
        say(f"bitfit: {len(added)} of {len(names)} targeted Linears had no bias; added zero-initialised "
            f"biases to them (the model is unchanged at step 0)")
    return installed


METHOD = Method(
    name="bitfit",
    capacity_hint="more target modules (method.targets) or a method with more capacity (lora)",
    config_cls=BitFitConfig,
    install=install_bitfit,
    summary="only bias terms train; zero biases added where the base has none (Ben Zaken et al. 2022)",
)
