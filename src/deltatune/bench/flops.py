"""Model FLOPs of a training step, this machine's fp32 matmul peak, and MFU.

    counts = model_counts(model)                                   # before the method is installed
    flops = step_flops(workload, counts, adapter_params, tokens=812, labelled=230)
    peak = matmul_peak(threads=2, sizes=(1024, 2048))              # {"gflops": ..., ...}
    mfu = flops_per_s / (peak["gflops"] * 1e9)

A matmul of an (m, k) by a (k, n) matrix is 2 m k n FLOPs. Per token, a weight matrix of N
entries costs 2N forward, 2N for the gradient of its input (backward through it) and 2N for
the gradient of its weight (only when it trains). With N_body = the Linear weights inside the
decoder blocks, N_head = the vocabulary projection (V x H), N_adapter = the LoRA A and B
entries, T = tokens of the step (no padding) and L = labelled positions (the only logits the
loss needs):

    full:        6 N_body T + 6 N_head L
    lora/qlora:  (4 N_body + 6 N_adapter) T + 4 N_head L          (the base and head are frozen)
    dpo (lora):  the lora count on the 2B policy rows + (2 N_body T + 2 N_head L) for the
                 reference forward over the same rows

Not counted (so the MFU is a lower bound): attention scores and softmax (~4 layers x T x d per
token forward for a T-token row, a few % at these lengths), norms, activations, the optimiser,
QLoRA's dequantisation. The same model FLOPs are credited to every side, so a side that
computes logits at every position does that extra work for no credit: that is what MFU is for.
"""

from __future__ import annotations

import time

FORMULAS = {
    "full": "6*N_body*T + 6*N_head*L",
    "lora": "(4*N_body + 6*N_adapter)*T + 4*N_head*L",
    "qlora": "(4*N_body + 6*N_adapter)*T + 4*N_head*L",
    "dpo": "(4*N_body + 6*N_adapter)*T + 4*N_head*L  +  reference forward 2*N_body*T + 2*N_head*L",
}


def model_counts(model) -> dict:
    """{"body": Linear weights inside the decoder, "head": V x H} of a model before any method
    wraps its layers (a quantised Linear counts its logical in x out, not its packed bytes)."""
    import torch

    body = 0
    for module in model.get_decoder().modules():
        if isinstance(module, torch.nn.Linear):  # bitsandbytes' Linear4bit is one too
            body += module.in_features * module.out_features
    head = model.get_output_embeddings()
    return {"body": body, "head": head.in_features * head.out_features}


def formula_for(workload) -> str:
    return FORMULAS["dpo"] if workload.objective == "dpo" else FORMULAS[workload.method]


def step_flops(workload, counts: dict, adapter_params: int, tokens: int, labelled: int) -> float:
    """Model FLOPs of one optimiser step (see the module docstring for the formula)."""
    body, head = counts["body"], counts["head"]
    if not workload.adapter:
        return 6.0 * body * tokens + 6.0 * head * labelled
    policy = (4.0 * body + 6.0 * adapter_params) * tokens + 4.0 * head * labelled
    if workload.objective == "dpo":
        return policy + 2.0 * body * tokens + 2.0 * head * labelled
    return policy


def matmul_gflops(m: int, k: int, n: int, repeats: int = 3) -> float:
    """Best GFLOP/s of an fp32 (m, k) @ (k, n) matmul over `repeats` timed runs (after one warm-up)."""
    import torch

    a, b = torch.randn(m, k), torch.randn(k, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * m * k * n / best / 1e9


def matmul_peak(threads: int, sizes: tuple[int, ...] = (1024, 2048), model_shape: tuple[int, int, int] | None = None,
                repeats: int = 3) -> dict:
    """This machine's fp32 matmul peak at `threads` torch threads: the best square n x n matmul
    (`gflops`, what MFU divides by), each size's figure, and one at the model's own shape
    (tokens x hidden @ hidden x intermediate) for reference."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        square = {str(n): round(matmul_gflops(n, n, n, repeats), 2) for n in sizes}
        out = {"gflops": max(square.values()), "square": square, "threads": threads}
        if model_shape is not None:
            m, k, n = model_shape
            out["model_shape"] = {"mkn": [m, k, n], "gflops": round(matmul_gflops(m, k, n, repeats), 2)}
        return out
    finally:
        torch.set_num_threads(before)
