"""Activation memory of one training forward: LoRA vs LoRA-FA (Zhang et al. 2023, arXiv:2308.03303).

    .venv/bin/python benchmarks/lora_fa_memory.py                 # SmolLM2-135M shape, batch 8 x 128
    .venv/bin/python benchmarks/lora_fa_memory.py --batch 2 --seq 32 --layers 4

What it measures: the bytes autograd keeps for backward after one training forward (the LM loss
through deltatune's forward path), read with `torch.autograd.graph.saved_tensors_hooks`: every
tensor the graph saves is seen by the pack hook, and each underlying storage is counted once
(by its data_ptr; views of one activation share it). Parameters and buffers are left out: they
exist whether or not a graph holds them, so what remains is the activation memory the method
adds. LoRA's A needs each adapted layer's input x for its weight gradient; LoRA-FA freezes A, so
only A x (r wide) is kept for B's gradient.

The model is a Llama built from SmolLM2-135M's config with random weights (hidden 576, FFN 1536,
30 layers, 9 heads, 3 KV heads, vocab 49152, tied embeddings), fp32, no gradient checkpointing,
dropout 0; both methods at r 16 on every linear layer. Random token ids, every position
labelled. Writes benchmarks/results/lora_fa_memory.json.

Measured (torch 2.13 CPU, batch 8 x 128): LoRA keeps 1375 MiB, LoRA-FA 1060 MiB (1.30x). The
315 MiB difference is exactly 1024 tokens x 30 layers x (576 + 576 + 1536) fp32: the inputs of
q/k/v (one shared tensor), of gate/up (shared) and of down_proj, which only A's gradient needed.
o_proj's input is the attention output, which SDPA saves anyway, so freezing A saves nothing
there. Most of what is left is the base's own activations and the 49152-wide logits.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results" / "lora_fa_memory.json"
SMOLLM2_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True, max_position_embeddings=2048)


def saved_activation_bytes(model: torch.nn.Module, batch: dict, loss_fn) -> int:
    """Bytes of the distinct storages autograd saves during `loss_fn(model, batch)`, parameters
    and buffers excluded (see the module docstring). The graph is dropped afterwards."""
    own = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    kept: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in own:
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss, _ = loss_fn(model, batch)
    del loss
    return sum(kept.values())


def measure(base: torch.nn.Module, method_cfg, batch: dict) -> dict:
    """Saved bytes and trainable count of `method_cfg` applied to a copy of `base`."""
    from deltatune.losses.lm import model_lm_loss
    from deltatune.methods import core

    model = copy.deepcopy(base)
    core.apply_method(model, method_cfg)
    model.train()
    start = time.perf_counter()
    saved = saved_activation_bytes(model, batch, model_lm_loss)
    trainable, _ = core.count_parameters(model)
    return {"saved_bytes": saved, "trainable_params": trainable, "forward_s": round(time.perf_counter() - start, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--layers", type=int, default=SMOLLM2_135M["num_hidden_layers"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import LlamaConfig, LlamaForCausalLM

    from deltatune.methods.lora import LoraConfig
    from deltatune.methods.lora_fa import LoraFaConfig

    shape = {**SMOLLM2_135M, "num_hidden_layers": args.layers}
    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(**shape)).eval()
    ids = torch.randint(0, shape["vocab_size"], (args.batch, args.seq), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    common = dict(r=args.r, alpha=2 * args.r, dropout=0.0, targets="all-linear")
    results = {name: measure(base, cfg, batch)
               for name, cfg in (("lora", LoraConfig(**common)), ("lora_fa", LoraFaConfig(**common)))}
    lora, fa = results["lora"]["saved_bytes"], results["lora_fa"]["saved_bytes"]
    report = {
        "what": "bytes of distinct storages autograd saves in one training forward (parameters excluded)",
        "model": {"config": shape, "weights": "random", "dtype": "float32"},
        "batch": args.batch, "seq": args.seq, "r": args.r, "targets": "all-linear", "dropout": 0.0,
        "loss": "deltatune.losses.lm.model_lm_loss, every position labelled",
        "lora": results["lora"], "lora_fa": results["lora_fa"],
        "saved_mib": {"lora": round(lora / 2**20, 1), "lora_fa": round(fa / 2**20, 1),
                      "difference": round((lora - fa) / 2**20, 1)},
        "ratio_lora_over_lora_fa": round(lora / fa, 3),
        "torch": torch.__version__, "machine": platform.machine(),
    }
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
