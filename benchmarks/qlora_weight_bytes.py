"""How much memory QLoRA's quantised base saves: bytes of the decoder Linear weights stored by
bitsandbytes (packed codes + the whole quantisation state) against the same weights in fp32.

    .venv/bin/python benchmarks/qlora_weight_bytes.py              # SmolLM2-135M, 4 and 8 bits
    .venv/bin/python benchmarks/qlora_weight_bytes.py --model DIR --bits 4

Loads the model once per width through the qlora row's `load_base` (the normal loader, then
every Linear of the transformer blocks quantised; no training), counts with
`deltatune.methods.qlora.quantised_weight_bytes`, and also reports the whole model's bytes
(embeddings, norms and head stay in fp32). Then times one forward of the tiny 2-layer test
Llama shape, 4-bit vs fp32, on the CPU (median of repeats; bitsandbytes dequantises every
Linear on each call, so the 4-bit base is slower on a CPU: the saving is memory, not time).
Writes benchmarks/results/qlora_weight_bytes.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results" / "qlora_weight_bytes.json"


def model_bytes(model: torch.nn.Module) -> int:
    """Every parameter and buffer of the model (quantisation state included), tied ones once."""
    from deltatune.methods.qlora import quantised_weight_bytes

    seen, total = set(), 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            total += tensor.numel() * tensor.element_size()
    report = quantised_weight_bytes(model)
    return total + report["quantised_bytes"] - report["by_part"]["packed_weight"]  # + the quant states


def weight_bytes(model_name: str, bits: int) -> dict:
    from deltatune.config import ModelConfig
    from deltatune.methods.qlora import QloraConfig, load_quantised_base, quantised_weight_bytes

    start = time.perf_counter()
    model, _ = load_quantised_base(ModelConfig(name=model_name), device="cpu", method_cfg=QloraConfig(bits=bits))
    seconds = time.perf_counter() - start
    report = quantised_weight_bytes(model)
    whole = model_bytes(model)
    fp32_whole = whole - report["quantised_bytes"] + report["fp32_bytes"]
    return {**report, "ratio": round(report["ratio"], 4), "load_and_quantise_seconds": round(seconds, 2),
            "model_bytes": whole, "model_bytes_fp32": fp32_whole, "model_ratio": round(whole / fp32_whole, 4)}


def tiny_forward_ms(repeats: int = 30) -> dict:
    """One forward (batch 4 x 64 tokens) of the tiny test Llama, fp32 vs 4-bit base."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from deltatune.methods.qlora.quantise import decoder_linear_names, put_layers, quantised_layers

    cfg = LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    torch.manual_seed(0)
    fp32 = LlamaForCausalLM(cfg).eval()
    nf4 = copy.deepcopy(fp32)
    put_layers(nf4, quantised_layers(nf4, decoder_linear_names(nf4), 4))
    ids = torch.randint(0, 1000, (4, 64), generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {"fp32": [], "nf4": []}
    with torch.inference_mode():
        for _ in range(repeats):  # alternate so machine noise hits both alike
            for name, model in (("fp32", fp32), ("nf4", nf4)):
                start = time.perf_counter()
                model(input_ids=ids)
                times[name].append(1000 * (time.perf_counter() - start))
    med = {name: round(statistics.median(t[3:]), 3) for name, t in times.items()}  # first calls warm up
    return {"shape": "tiny Llama, hidden 64, 2 layers, batch 4 x 64 tokens", "threads": torch.get_num_threads(),
            "median_ms": med, "nf4_over_fp32": round(med["nf4"] / med["fp32"], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="model.name (embedded alias or HF folder)")
    parser.add_argument("--bits", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import bitsandbytes

    result = {"model": args.model, "machine": platform.processor() or platform.machine(),
              "torch": torch.__version__, "bitsandbytes": bitsandbytes.__version__,
              "weight_bytes": {str(bits): weight_bytes(args.model, bits) for bits in args.bits},
              "tiny_forward": tiny_forward_ms()}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
