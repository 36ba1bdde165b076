"""Data-parallel training across processes (torchrun): who computes what, and who writes.

    torchrun --nproc_per_node 2 -m deltatune train CONFIG            # one machine, 2 processes
    torchrun --nnodes 2 --node_rank R --master_addr HOST --nproc_per_node 2 -m deltatune train CONFIG

    group = ProcessGroup.from_env(cfg.train, device)   # a single process: world 1, no-ops
    shard = group.shard(examples)                      # this rank's share of a micro-batch
    group.all_reduce_grads(params)                     # sum of every rank's gradient

How the arithmetic stays the single-process arithmetic. Every rank builds the same sampler
(same seed), so each micro-batch is the same list of examples everywhere; rank r takes every
`world`-th example of it (strided, so the length-sorted buckets give every rank a similar
share of tokens). Each rank weights its loss by its units over the *global* units of the step
(one small all-reduce before backward), so the sum of the ranks' gradients — one all-reduce
after backward, in flat buckets — is exactly the gradient of the whole batch, and the global
batch (`train.batch_size` x `train.grad_accum`) is the same whatever the process count. The
optimiser step is then identical on every rank, so the weights never drift apart and a
checkpoint is the same whoever wrote it: resume works with a different process count (the
data position is counted in global micro-batches).

Only rank 0 writes (checkpoints, metrics.jsonl, best weights, eval.json, the adapter) and
draws the progress bar; the other ranks return after training. `train.distributed: ddp` is the
data-parallel engine (gradients all-reduced by us in flat buckets, the same all-reduce DDP
does, without wrapping the model, so every method's forward path runs unchanged); the backend
is gloo on CPU and NCCL on CUDA.
"""

from __future__ import annotations

import dataclasses
import datetime
import os

import torch
import torch.distributed as dist

from deltatune.errors import DeltatuneError

BUCKET_ELEMENTS = 25_000_000  # gradients all-reduced per flat bucket (~100 MB fp32)


def launched_world_size() -> int:
    """The process count torchrun started (1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclasses.dataclass
class ProcessGroup:
    """This process's place in the run: rank, world size, and the collectives the loop needs."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, train_cfg, device: torch.device | str = "cpu") -> ProcessGroup:
        """Join the process group torchrun described in the environment (once per process)."""
        world = launched_world_size()
        if world == 1:
            return cls()
        if not dist.is_initialized():
            backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
            timeout = datetime.timedelta(minutes=train_cfg.distributed_timeout_min)
            dist.init_process_group(backend=backend, timeout=timeout)
            if torch.device(device).type == "cuda":
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        return cls(rank=dist.get_rank(), world=dist.get_world_size())

    def check_batch(self, batch_size: int) -> None:
        """The global batch is kept when the process count changes, so it must divide."""
        if batch_size % self.world:
            raise DeltatuneError(
                f"train.batch_size {batch_size} does not divide over {self.world} processes: each process "
                f"takes an equal share of every micro-batch. Use a batch size that is a multiple of {self.world} "
                f"(e.g. train.batch_size={max(self.world, batch_size - batch_size % self.world)}) or another "
                f"--nproc_per_node")

    def shard(self, examples: list) -> list:
        """This rank's share of one micro-batch (every `world`-th example, from `rank`)."""
        return examples[self.rank::self.world] if self.world > 1 else examples

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of `values` over all ranks (float64, so unit counts stay exact)."""
        if self.world == 1:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self._device())
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.tolist()

    def all_reduce_grads(self, params: list[torch.Tensor]) -> None:
        """Replace each parameter's gradient by the sum over ranks (a missing one counts as 0)."""
        if self.world == 1:
            return
        for bucket in _buckets(params, BUCKET_ELEMENTS):
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in bucket]
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            offset = 0
            for p, g in zip(bucket, grads):
                reduced = flat[offset:offset + g.numel()].view_as(g)
                if p.grad is None:
                    p.grad = reduced.clone()
                else:
                    p.grad.copy_(reduced)
                offset += g.numel()

    def main_first(self, work):
        """`work()` on rank 0, then on the others: what rank 0 caches (the converted embedded
        model, the base model's replay answers) the others then read instead of redoing."""
        if self.is_main:
            result = work()
            self.barrier()
            return result
        self.barrier()
        return work()

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def _device(self) -> torch.device:
        return torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")


def _buckets(params: list[torch.Tensor], size: int):
    """Consecutive groups of parameters of one dtype and device, each about `size` elements."""
    bucket: list[torch.Tensor] = []
    count = 0
    for p in params:
        if bucket and (count + p.numel() > size or p.dtype != bucket[0].dtype or p.device != bucket[0].device):
            yield bucket
            bucket, count = [], 0
        bucket.append(p)
        count += p.numel()
    if bucket:
        yield bucket


_CURRENT = ProcessGroup()


def current() -> ProcessGroup:
    """The process group of this process's run (world 1 until `join` is called)."""
    return _CURRENT


def join(train_cfg, device="auto") -> ProcessGroup:
    """Join torchrun's process group (if any) and make it `current()` for the recipe's writers;
    `device` is `model.device` (auto / cpu / cuda...: it picks the backend)."""
    global _CURRENT
    from deltatune.models.device import resolve_device

    _CURRENT = ProcessGroup.from_env(train_cfg, resolve_device(device))
    return _CURRENT
