"""What the estimate knows about the base model and the method on it, without loading weights.

    base = describe_base(cfg.model)                  # config.json + safetensors headers only
    counts = meta_counts(base, cfg, tokenizer)       # the method installed on a `meta` model

`describe_base` resolves `model.name` the way the loader does (`deltatune.models.loader.
resolve_model_path`: the embedded alias, a local folder, a run dir, a hub id; a missing path is
the loader's DeltatuneError), reads the architecture from config.json and every stored tensor's
dtype and byte range from the safetensors headers (the first 8 bytes give the header length;
no tensor data is read).

`meta_counts` builds the model on the `meta` device (shapes and dtypes, no storage), installs
the configured method on it through `methods.core.apply_method` (the real install, so the count
is the method's own, whatever the method) and counts: trainable and total parameters, the bytes
every tensor takes in memory, the bytes the method added, and the matmul parameters per block
that the FLOPs formula (`estimate.flops`) needs. A method whose install must read weight values
(QLoRA quantises them, FISH Mask's random mask indexes them) cannot be installed on `meta`;
`meta_counts` returns None and the counts come from the probe's small real models instead
(`estimate.probe`: 2 and 8 layers, extrapolated to the model's depth).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import json
import struct
from pathlib import Path

import torch
from torch import nn

from deltatune.errors import DeltatuneError

SAFETENSORS_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                      "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
TORCH_TO_SAFETENSORS = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


@dataclasses.dataclass
class BaseInfo:
    """The base model as stored: where, its architecture, and its tensors' bytes on disk."""

    name: str  # model.name as configured
    path: str  # resolved folder (or hub id)
    config: object  # transformers PretrainedConfig
    file_bytes: int | None  # bytes of the stored tensors (None: no local safetensors)
    file_dtypes: set[str]  # safetensors dtype names of the stored floating tensors
    from_run: bool = False  # model.name is a run dir: its base is merged in memory, not mapped
    trust_remote_code: bool = False

    def maps_file(self, load_dtype: torch.dtype, device: torch.device) -> bool:
        """Does loading leave the weights as views of the memory-mapped file? transformers maps
        safetensors and, on the CPU in the stored dtype, hands the mapped tensors over without a
        copy: the file's pages are resident while any tensor of it lives, even after a method
        replaced some of them (unless its load lets go of the file: `releases_file_pages`)."""
        return (device.type == "cpu" and not self.from_run and self.file_bytes is not None
                and self.file_dtypes == {TORCH_TO_SAFETENSORS.get(load_dtype)})


@dataclasses.dataclass
class Counts:
    """The method on the model, counted (element counts are logical: a packed 4-bit weight counts
    the values it stands for)."""

    layers: int
    hidden: int
    vocab: int
    attention_width: int  # heads x head_dim: the width QK^T and AV run at
    trainable: int
    total: int
    weight_bytes: int  # every parameter and buffer as held in memory (packed weights at their size)
    new_bytes: int  # of those, tensors the method added (not the loaded base's own)
    block_matmul: float  # matmul weight elements per block (>= 2-D parameters, method's included)
    block_trainable_matmul: float  # of those, trainable
    head_matmul: int  # elements of the output head's weight
    head_trainable: bool
    lowest_trainable_block: int  # backward runs from the top down to this block (layers: none)
    source: str  # "meta" or "probe"

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def describe_base(model_cfg) -> BaseInfo:
    """`BaseInfo` for a `ModelConfig` (see module docstring); loader errors pass through."""
    from deltatune.models.loader import resolve_model_path
    from deltatune.models.runs import is_run_dir

    name, from_run = model_cfg.name, False
    while is_run_dir(name):  # a finished run as the base: its own base's shapes (merged in memory)
        from deltatune.config import load_run_config

        name, from_run = load_run_config(name).model.name, True
    path = resolve_model_path(name)
    config = _auto_config(path, model_cfg.trust_remote_code)
    file_bytes, dtypes = _stored_tensors(Path(path)) if Path(path).is_dir() else (None, set())
    return BaseInfo(model_cfg.name, path, config, file_bytes, dtypes, from_run, model_cfg.trust_remote_code)


def _auto_config(path: str, trust_remote_code: bool):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise DeltatuneError(f"model {path}: cannot read its config.json ({err})") from err


def safetensors_header(path: Path) -> dict:
    """{tensor name: {"dtype", "shape", "data_offsets"}} of one .safetensors file (header only)."""
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
    except (OSError, struct.error, ValueError) as err:
        raise DeltatuneError(f"{path}: not a readable safetensors file ({err})") from err
    header.pop("__metadata__", None)
    return header


def _stored_tensors(folder: Path) -> tuple[int | None, set[str]]:
    """(bytes of every stored tensor, dtypes of the floating ones) over the folder's shards."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None, set()
    total, dtypes = 0, set()
    for file in files:
        for entry in safetensors_header(file).values():
            start, end = entry["data_offsets"]
            total += end - start
            if entry["dtype"].startswith(("F", "BF")):
                dtypes.add(entry["dtype"])
    return total, dtypes


def architecture(config) -> dict:
    """Layers, hidden size, vocabulary and attention width from a transformers config."""
    text = getattr(config, "text_config", None) or config
    hidden = int(text.hidden_size)
    heads = int(getattr(text, "num_attention_heads", 1) or 1)
    head_dim = int(getattr(text, "head_dim", None) or hidden // heads)
    return {"layers": int(text.num_hidden_layers), "hidden": hidden, "vocab": int(text.vocab_size),
            "attention_width": heads * head_dim}


def with_layers(config, layers: int):
    """A copy of `config` with `layers` decoder layers (per-layer lists cut to match)."""
    small = copy.deepcopy(config)
    small.num_hidden_layers = layers
    for attr in ("layer_types", "sliding_window_pattern_list"):
        value = getattr(small, attr, None)
        if isinstance(value, list):
            setattr(small, attr, value[:layers])
    return small


def build_model(config, dtype: torch.dtype, device: str | torch.device, trust_remote_code: bool = False) -> nn.Module:
    """The architecture with fresh weights on `device` ("meta": shapes only, no storage)."""
    from transformers import AutoModelForCausalLM

    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code)
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = getattr(model.config, "eos_token_id", None)
    return model


def meta_counts(base: BaseInfo, method_cfg, load_dtype: torch.dtype, tokenizer=None) -> Counts | None:
    """`Counts` of `method_cfg` installed on the meta-device model, or None when the method's
    install needs real weight values (module docstring). A config that does not fit the model
    (targets matching nothing, a size out of range) raises the method's own DeltatuneError."""
    from deltatune.methods.core import apply_method

    model = build_model(base.config, load_dtype, "meta", base.trust_remote_code)
    base_ids = tensor_ids(model)
    try:
        with quiet():  # the method's install notes are printed when the run installs it
            apply_method(model, method_cfg, tokenizer=tokenizer, initialise=False)
    except (NotImplementedError, RuntimeError) as err:
        if "meta" in str(err).lower():
            return None
        raise
    return count_model(model, base_ids, source="meta")


def quiet():
    """Hold back what the code inside prints (the recipe says it again when it runs)."""
    return contextlib.redirect_stdout(io.StringIO())


def tensor_ids(model: nn.Module) -> set[int]:
    """Identities of a model's parameters and buffers (what the loaded base itself holds)."""
    return {id(t) for t in _tensors(model)}


def count_model(model: nn.Module, base_ids: set[int], source: str) -> Counts:
    """`Counts` of a model with its method installed; `base_ids` = `tensor_ids` before install."""
    from deltatune.forward import output_head
    from deltatune.methods.modules import find_block_list

    arch = architecture(model.config)
    blocks_name, blocks = find_block_list(model)
    weight_bytes = new_bytes = trainable = total = 0
    for tensor in _tensors(model):
        nbytes = tensor_bytes(tensor)
        weight_bytes += nbytes
        new_bytes += nbytes if id(tensor) not in base_ids else 0
    for param in _unique(model.parameters()):
        n = logical_numel(param)
        total += n
        trainable += n if param.requires_grad else 0
    matmul = trainable_matmul = 0
    lowest = len(blocks)
    for index, block in enumerate(blocks):
        params = list(_unique(block.parameters()))
        matmul += sum(logical_numel(p) for p in params if p.dim() >= 2)
        trainable_matmul += sum(logical_numel(p) for p in params if p.dim() >= 2 and p.requires_grad)
        if any(p.requires_grad for p in params) and lowest == len(blocks):
            lowest = index
    in_blocks = {id(p) for p in _unique(blocks.parameters())}
    if any(p.requires_grad and id(p) not in in_blocks for p in model.parameters()):
        lowest = 0  # embeddings, virtual tokens or a prefix table train: backward goes all the way
    head = output_head(model).weight
    return Counts(layers=len(blocks), hidden=arch["hidden"], vocab=arch["vocab"],
                  attention_width=arch["attention_width"], trainable=trainable, total=total,
                  weight_bytes=weight_bytes, new_bytes=new_bytes, block_matmul=matmul / len(blocks),
                  block_trainable_matmul=trainable_matmul / len(blocks), head_matmul=logical_numel(head),
                  head_trainable=bool(head.requires_grad), lowest_trainable_block=lowest, source=source)


def extrapolate(small: Counts, larger: Counts, layers: int) -> Counts:
    """`Counts` of the full-depth model from those of two shallow copies (every additive count is
    linear in the number of layers; per-block figures are the deeper copy's)."""
    span = larger.layers - small.layers

    def grow(a: float, b: float) -> float:
        return a + (layers - small.layers) * (b - a) / span

    if larger.lowest_trainable_block == 0:
        lowest = 0
    else:  # the last k blocks train (freeze): the same k of the full model
        lowest = layers - (larger.layers - larger.lowest_trainable_block)
    return dataclasses.replace(
        larger, layers=layers, trainable=round(grow(small.trainable, larger.trainable)),
        total=round(grow(small.total, larger.total)), weight_bytes=round(grow(small.weight_bytes, larger.weight_bytes)),
        new_bytes=round(grow(small.new_bytes, larger.new_bytes)), lowest_trainable_block=max(0, lowest),
        source="probe")


def logical_numel(param: torch.Tensor) -> int:
    """Elements a parameter stands for: a packed quantised weight counts its unpacked shape."""
    shape = getattr(getattr(param, "quant_state", None), "shape", None)
    return int(torch.Size(shape).numel()) if shape is not None else param.numel()


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes a parameter or buffer holds, with a quantised weight's scales and code books."""
    nbytes = tensor.numel() * tensor.element_size()
    state = getattr(tensor, "quant_state", None)
    for part in _quant_state_tensors(state):
        nbytes += part.numel() * part.element_size()
    scb = getattr(tensor, "SCB", None)  # LLM.int8(): one scale per output row
    if isinstance(scb, torch.Tensor):
        nbytes += scb.numel() * scb.element_size()
    return nbytes


def _quant_state_tensors(state) -> list[torch.Tensor]:
    if state is None:
        return []
    parts = [getattr(state, name, None) for name in ("absmax", "code", "offset")]
    nested = getattr(state, "state2", None)
    if nested is not None:
        parts += [getattr(nested, "absmax", None), getattr(nested, "code", None)]
    return [p for p in parts if isinstance(p, torch.Tensor)]


def _tensors(model: nn.Module):
    return _unique(list(model.parameters()) + list(model.buffers()))


def _unique(tensors):
    seen: set[int] = set()
    for tensor in tensors:
        if tensor is not None and id(tensor) not in seen:
            seen.add(id(tensor))
            yield tensor
