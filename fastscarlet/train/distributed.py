"""torch.distributed for supernet training: process group from torchrun, one all-reduce per step.

Why not ``DistributedDataParallel``: one path uses about 1/13 of the supernet's parameters and a
strict-fairness step runs ``m`` forward/backward passes before one update. DDP all-reduces in every
backward unless ``no_sync`` is used, and its unused-parameter detection
(``find_unused_parameters=True``) walks the graph each backward and tracks participation per
iteration, which is fragile across ``no_sync`` accumulation when each pass uses different
parameters. Every rank draws the same paths (same sampler seed), so the set of parameters with a
gradient is identical on all ranks; :class:`GradientSync` flattens those gradients (and the float
buffers, i.e. BN running statistics) into one buffer and all-reduces it **once per step**.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group that torchrun describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``/``MASTER_PORT``); a single process without those variables stays local.
    Backend: NCCL on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def broadcast_parameters(model: nn.Module, src: int = 0) -> None:
    """Make every rank start from rank ``src``'s weights and buffers."""
    for t in [*model.parameters(), *model.buffers()]:
        dist.broadcast(t.data, src)


class GradientSync:
    """Average gradients (and float buffers) across ranks in one coalesced all-reduce."""

    def __init__(self, model: nn.Module, info: DistInfo, sync_buffers: bool = True) -> None:
        self.model, self.info, self.sync_buffers = model, info, sync_buffers

    def __call__(self) -> None:
        if not self.info.enabled:
            return
        tensors = [p.grad for p in self.model.parameters() if p.grad is not None]
        if self.sync_buffers:
            tensors += [b for b in self.model.buffers() if b.is_floating_point()]
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for t in tensors:
            by_dtype.setdefault(t.dtype, []).append(t)
        for group in by_dtype.values():
            flat = torch.cat([t.reshape(-1) for t in group])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat.div_(self.info.world_size)
            offset = 0
            for t in group:
                n = t.numel()
                t.copy_(flat[offset : offset + n].view_as(t))
                offset += n


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_ranks_flag(flag: bool, info: DistInfo, device: torch.device | str = "cpu") -> bool:
    """True if ``flag`` is true on any rank (e.g. a non-finite loss)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def destroy(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
