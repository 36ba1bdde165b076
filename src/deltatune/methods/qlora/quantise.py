"""Store a model's decoder Linears in 4 or 8 bits with bitsandbytes, and read them back as floats.

    bnb = import_bitsandbytes()                             # DeltatuneError with the pip line if absent
    names = decoder_linear_names(model)                     # every Linear inside the block stack
    layers = quantised_layers(model, names, bits=4)         # new bnb layers; the model is untouched
    put_layers(model, layers)                               # swap them in
    w = dequantised_weight(model.get_submodule(names[0]))   # (out, in) in the compute dtype

4 bits (Dettmers et al. 2023, QLoRA, arXiv:2305.14314): NF4, each block of 64 weights scaled by
its absmax c1 and stored as the index of the nearest of 16 NormalFloat levels q_i (quantiles of
N(0, 1) scaled to [-1, 1]); double quantisation stores the c1 themselves in 8 bits per block
of 256 (their mean subtracted, the `offset`), with one fp32 scale c2 per block:

    W ≈ dequant(W) = q[idx] * c1,   c1 ≈ dequant_8bit(c1_q, c2) + offset

bitsandbytes `Linear4bit(quant_type="nf4", compress_statistics=True)`; its forward dequantises
to the compute dtype and multiplies (activations stay in the compute dtype), so dequant(W) x
is exactly what the layer computes.

8 bits (Dettmers et al. 2022, LLM.int8(), arXiv:2208.07339): row-wise absmax int8,
W ≈ CB * SCB / 127, bitsandbytes `Linear8bitLt(has_fp16_weights=False, threshold=6.0)`: the
paper's outlier threshold (transformers' default), so activation columns with a value above 6
run in fp16. Unlike 4 bits, bnb's int8 matmul also quantises the activations (on the CPU in
eval mode, on CUDA always), so an 8-bit layer computes dequant(W) x only up to that error.

Quantisation happens where bitsandbytes does it: when the layer moves to its device
(`layer.to(device)`), so a GPU run quantises on the GPU one layer at a time and the fp weights
never all sit in GPU memory. The LM head and embeddings are never quantised (QLoRA keeps them
in the compute dtype); only the Linears inside the transformer blocks are.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from deltatune.errors import DeltatuneError
from deltatune.methods.modules import find_block_list, linear_names, swap_module

BLOCKSIZE_4BIT = 64  # the QLoRA paper's block size for the first-level absmax
INT8_OUTLIER_THRESHOLD = 6.0  # LLM.int8()'s alpha
INSTALL_HINT = "pip install 'deltatune[qlora]' (or: pip install bitsandbytes)"


def import_bitsandbytes():
    """The bitsandbytes module, or a DeltatuneError saying how to install it."""
    try:
        import bitsandbytes
    except ImportError as err:  # also a broken install (missing native library)
        raise DeltatuneError(f"method qlora needs the bitsandbytes package, which is not installed or "
                             f"does not import ({err}): {INSTALL_HINT}") from None
    return bitsandbytes


def bits_of(module: nn.Module) -> int | None:
    """4 or 8 for a bitsandbytes quantised Linear, None for anything else (and whenever
    bitsandbytes was never imported: then nothing can be quantised)."""
    bnb = sys.modules.get("bitsandbytes")
    if bnb is None:
        return None
    if isinstance(module, bnb.nn.Linear4bit):
        return 4
    if isinstance(module, bnb.nn.Linear8bitLt):
        return 8
    return None


def decoder_linear_names(model: nn.Module) -> list[str]:
    """Full names of the Linears (plain or already quantised) inside the transformer blocks, in
    model order: what QLoRA stores quantised. The head and embeddings are outside the blocks."""
    blocks_name, _ = find_block_list(model)
    return [n for n in linear_names(model) if n.startswith(blocks_name + ".")]


def quantise_linear(linear: nn.Linear, bits: int, device: torch.device | str | None = None) -> nn.Module:
    """A new bitsandbytes layer holding `linear`'s weight in `bits` bits, quantised on `device`
    (default: where the weight is); `linear` itself is not changed. The
    compute dtype is the weight's own (fp32, or bf16 for a bf16 model)."""
    bnb = import_bitsandbytes()
    dtype = linear.weight.dtype
    device = torch.device(device) if device is not None else linear.weight.device
    weight = linear.weight.detach().to("cpu", copy=True)  # bnb quantises on the move off the CPU
    has_bias = linear.bias is not None
    if bits == 4:
        layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=has_bias, compute_dtype=dtype,
                                  compress_statistics=True, quant_type="nf4", device="meta")
        layer.weight = bnb.nn.Params4bit(weight, requires_grad=False, blocksize=BLOCKSIZE_4BIT,
                                         compress_statistics=True, quant_type="nf4", module=layer)
        # bnb would repack the weight for AVX512-BF16 CPUs on the first eval forward: a different
        # tensor and different rounding than in training; keep one layout everywhere
        layer.support_avx512bf16_for_cpu = False
    elif bits == 8:
        layer = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=has_bias, has_fp16_weights=False,
                                    threshold=INT8_OUTLIER_THRESHOLD, device="meta")
        layer.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
        layer.compute_dtype = dtype  # bnb's 8-bit layer keeps none; dequantised_weight needs it
    else:
        raise DeltatuneError(f"method.bits={bits}: allowed values are 4 and 8")
    if has_bias:
        layer.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
    return layer.to(device)  # quantisation happens here (bitsandbytes' API)


def quantised_layers(model: nn.Module, names: list[str], bits: int,
                     device: torch.device | str | None = None) -> dict[str, nn.Module]:
    """{name: quantised copy} for the plain `nn.Linear`s among `names` (already quantised ones
    are skipped). Builds only; `put_layers` swaps them in, so a failure changes nothing."""
    return {name: quantise_linear(module, bits, device) for name in names
            if type(module := model.get_submodule(name)) is nn.Linear}


def put_layers(model: nn.Module, layers: dict[str, nn.Module]) -> None:
    for name, layer in layers.items():
        swap_module(model, name, layer)


def compute_dtype(layer: nn.Module) -> torch.dtype:
    """The float dtype a quantised layer computes in (a plain Linear: its weight's)."""
    bits = bits_of(layer)
    if bits == 4:
        return layer.compute_dtype or layer.weight.quant_state.dtype
    if bits == 8:
        return getattr(layer, "compute_dtype", None) or torch.float32
    return layer.weight.dtype


def dequantised_weight(layer: nn.Module) -> torch.Tensor:
    """W0 as the layer stores it, as a float (out, in) tensor in its compute dtype; a plain
    Linear's weight as it is. A new tensor for quantised layers (no grad)."""
    bits = bits_of(layer)
    if bits is None:
        return layer.weight
    bnb = import_bitsandbytes()
    with torch.no_grad():
        if bits == 4:
            w = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state)
        else:
            # before the first forward CB / SCB sit on the weight, afterwards on the layer's state
            cb = layer.state.CB if layer.state.CB is not None else layer.weight.data
            scb = layer.state.SCB if layer.state.SCB is not None else layer.weight.SCB
            w = bnb.functional.int8_vectorwise_dequant(cb, scb)  # CB * SCB / 127, fp32
    return w.to(compute_dtype(layer))


def plain_linear(layer: nn.Module, weight: torch.Tensor | None = None) -> nn.Linear:
    """An `nn.Linear` computing with `weight` (default: the layer's dequantised weight) and the
    layer's bias: state-dict keys `weight` / `bias`, as the unquantised base had."""
    weight = dequantised_weight(layer) if weight is None else weight
    out = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                    device="meta", dtype=weight.dtype)
    out.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
    if layer.bias is not None:
        out.bias = nn.Parameter(layer.bias.detach().to(weight.dtype).clone(), requires_grad=False)
    return out


def dequantise_model(model: nn.Module) -> list[str]:
    """Replace every quantised Linear left in `model` by its plain dequantised `nn.Linear`;
    returns their names."""
    names = [n for n, m in model.named_modules() if bits_of(m) is not None]
    put_layers(model, {name: plain_linear(model.get_submodule(name)) for name in names})
    return names
