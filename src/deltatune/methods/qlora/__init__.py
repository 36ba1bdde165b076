"""QLoRA (Dettmers et al. 2023, arXiv:2305.14314): LoRA over a base stored in 4-bit NF4.

    method: {name: qlora, r: 16, alpha: 32, targets: all-linear, bits: 4}
    model, tok = load_quantised_base(cfg.model, device="cuda", method_cfg=cfg.method)  # registry `load_base`
    installed = METHOD.install(model, QloraConfig(r=8), InstallContext())

The base: every Linear inside the transformer blocks stored by bitsandbytes (4 bits: NF4 with
double quantisation; 8 bits: LLM.int8()), the LM head and embeddings kept as they are
(`deltatune.methods.qlora.quantise`). Training and `deltatune merge` load it through the
registry row's `load_base`, which quantises on the way to the device.

Install (`install_qlora`) wraps the targets in `QLoRALinear` (LoRA's layer with a dequantising
`base_weight`, so PiSSA / OLoRA inits work on the quantised weights), or `QDoRALinear` with
`dora: true` (DoRA's layer over the same base). On a model that is not
quantised yet (a plain model handed to `apply_method`, e.g. by the method matrix or a script)
it first quantises the decoder Linears itself, exactly as `load_base` would: a qlora adapter
always trains and reloads against the quantised base, whichever way the model was loaded.
Switched off, the model computes that quantised base. The one exception is a shared base
(`ctx.shared_base`, serving several adapters over one plain model): it must not be written, so
the adapter runs over the unquantised layers (as peft does when a QLoRA adapter is loaded onto
the fp16 base) — to serve the exact quantised function, load the base with `load_base`.

Merging folds s B A into the dequantised weights and leaves plain `nn.Linear`s (a normal HF
model); an 8-bit base refuses (LLM.int8() also quantises activations: `QloraInstall.merge`).

Saved adapters are plain peft LoRA folders (`use_dora: true` with DoRA; PiSSA / OLoRA saved as
the rank-2r LoRA they amount to, `lora.convert`): peft loads them over a 4-bit or the fp base.
deltatune_adapter.json records `qlora`, so deltatune reloads them over a quantised base.
"""

from __future__ import annotations

from torch import nn

from deltatune.errors import DeltatuneError
from deltatune.methods.dora import peft_format as dora_format
from deltatune.methods.installs import WrapperInstall
from deltatune.methods.lora import check_rank, lora_targets, peft_format, start_product_to_rank_2r
from deltatune.methods.lora.plus import b_ratio_param_groups
from deltatune.methods.modules import swap_module
from deltatune.methods.peft_layout import from_peft_key, to_peft_key
from deltatune.methods.protocol import InstallContext, Method, MethodHooks, PeftTwin
from deltatune.methods.qlora.config import QloraConfig
from deltatune.methods.qlora.layer import QDoRALinear, QLoRALinear
from deltatune.methods.qlora.memory import quantised_weight_bytes
from deltatune.methods.qlora.quantise import (bits_of, decoder_linear_names, dequantise_model, import_bitsandbytes,
                                              put_layers, quantised_layers)

__all__ = ["METHOD", "QDoRALinear", "QLoRALinear", "QloraConfig", "install_qlora", "load_quantised_base",
           "quantised_weight_bytes"]


class QloraInstall(WrapperInstall):
    """LoRA wrappers over quantised layers; `merge_and_unload` leaves plain `nn.Linear`s."""

    def merge(self) -> None:
        """Fold into dequantised weights (QLoRALinear.merge); an 8-bit base refuses: bitsandbytes'
        LLM.int8() matmul quantises the activations too (in eval mode; on CUDA always), so no
        plain weight computes what the 8-bit layer computes and the merged model would differ
        by that error, not by rounding. Refused before any layer changes."""
        if any(bits_of(w.base_layer) == 8 for w in self.wrappers.values()):
            raise DeltatuneError("method.bits=8 cannot be merged: LLM.int8() also quantises the activations, so no "
                                 "plain weight reproduces the 8-bit layers; serve the adapter unmerged over the "
                                 "8-bit base, or train with method.bits=4 (NF4 quantises weights only: it merges)")
        super().merge()

    def merge_and_unload(self) -> None:
        """Every wrapper -> an `nn.Linear` with dequant(W0) + s B A; every other quantised Linear
        -> its dequantised `nn.Linear`: a normal HF model with the unquantised base's keys."""
        self.merge()
        self.attach()
        for name, wrapper in self.wrappers.items():
            swap_module(self.model, name, wrapper.merged_linear())
        dequantise_model(self.model)
        self.attached = False


def _check_fits(model: nn.Module, cfg: QloraConfig, quantisable: list[str], targets: list[str]) -> None:
    """Errors naming the config key before anything changes: targets outside the quantised
    Linears, a base already quantised to the other width."""
    outside = [n for n in targets if n not in set(quantisable)]
    if outside:
        raise DeltatuneError(f"method.targets selects {outside[:3]}, outside the transformer blocks: qlora adapts "
                             f"the quantised Linears of the blocks only (the head and embeddings stay unquantised); "
                             f"drop them from method.targets or use method.name=lora")
    other = sorted({bits_of(model.get_submodule(n)) for n in quantisable} - {None, cfg.bits})
    if other:
        raise DeltatuneError(f"method.bits={cfg.bits}, but this base's Linears are already quantised to {other[0]} "
                             f"bits; load the base for this config (the qlora row's load_base with method_cfg) "
                             f"or set method.bits={other[0]}")


def install_qlora(model: nn.Module, cfg: QloraConfig, ctx: InstallContext) -> QloraInstall:
    """Quantise the decoder Linears that are still plain (not over a shared base), then a
    QLoRALinear (QDoRALinear with `dora`) around every target; everything is built before the
    model changes."""
    import_bitsandbytes()
    quantisable = decoder_linear_names(model)
    targets = lora_targets(model, cfg)  # raises on a bad target before anything changes
    check_rank(model, targets, cfg.r, cfg.init)
    _check_fits(model, cfg, quantisable, targets)
    layers = {} if ctx.shared_base else quantised_layers(model, quantisable, cfg.bits)
    layer_cls = QDoRALinear if cfg.dora else QLoRALinear
    wrappers = {name: layer_cls(layers[name] if name in layers else model.get_submodule(name), r=cfg.r,
                                alpha=cfg.alpha, dropout=cfg.dropout, rslora=cfg.rslora, init=cfg.init)
                for name in targets}
    put_layers(model, layers)
    return QloraInstall(model, wrappers, MethodHooks(param_groups=b_ratio_param_groups(wrappers)))


def load_quantised_base(model_cfg, device=None, dtype: str | None = None, method_cfg: QloraConfig | None = None):
    """(model, tokenizer) as `deltatune.models.loader.load_causal_lm`, with every Linear of the
    transformer blocks quantised to `method_cfg.bits` (default 4) on `device`: loaded on the CPU,
    each layer quantised as it moves to the device, then the rest of the model moved."""
    from deltatune.models.device import resolve_device
    from deltatune.models.file_pages import release_file_pages
    from deltatune.models.loader import load_causal_lm

    import_bitsandbytes()  # before the load: a missing package fails fast
    bits = (method_cfg or QloraConfig()).bits
    target = resolve_device(device if device is not None else model_cfg.device)
    model, tokenizer = load_causal_lm(model_cfg, device="cpu", dtype=dtype)
    put_layers(model, quantised_layers(model, decoder_linear_names(model), bits, device=target))
    release_file_pages(model)  # the fp32 file's pages are no longer needed (deltatune.models.file_pages)
    return model.to(target).eval(), tokenizer


def _peft_adapter_config(model: nn.Module, cfg: QloraConfig, installed, base_model_path: str) -> dict:
    """peft's LoRA adapter_config (with `use_dora: true` for QDoRA): nothing in it is about
    the quantisation, which is how the base is loaded, not part of the adapter."""
    fmt = dora_format if cfg.dora else peft_format
    return fmt.peft_adapter_config(model, cfg, installed, base_model_path)


def _config_from_peft(raw: dict, where: str) -> QloraConfig:
    lora = peft_format.config_from_peft({**raw, "use_dora": False}, where)
    return QloraConfig(**lora.model_dump(exclude={"name"}), dora=bool(raw.get("use_dora")))


METHOD = Method(
    name="qlora",
    releases_file_pages=True,
    capacity_hint="a larger rank (method.r) or more target modules (method.targets)",
    config_cls=QloraConfig,
    install=install_qlora,
    load_base=load_quantised_base,
    # a plain peft LoRA folder: peft loads it over the 4-bit or the fp base; a plain peft folder
    # is read back as `lora` (only our deltatune_adapter.json says qlora)
    peft=PeftTwin("LORA", _peft_adapter_config, _config_from_peft, to_peft_key, from_peft_key,
                  accepts=lambda raw: False),
    save_as=start_product_to_rank_2r,  # pissa / olora -> the plain rank-2r LoRA over the (quantised) base
    summary="LoRA over a base stored in 4-bit NF4 with double quantisation (Dettmers et al. 2023)",
)
