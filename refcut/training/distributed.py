"""Process-group helpers for ``torchrun`` + DistributedDataParallel (gloo on CPU, nccl on GPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: ``rank`` of ``world_size`` processes, using ``device``."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the process that writes logs and checkpoints)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process trains."""
        return self.world_size > 1


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> this process's GPU if CUDA is available, else CPU; ``cpu`` / ``cuda`` / ``cuda:N`` as given."""
    if preference == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(preference)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {preference!r} requested but CUDA is not available")
        if device.index is None:
            device = torch.device(f"cuda:{local_rank}")
    return device


def init_distributed(device_preference: str = "auto") -> DistContext:
    """Join the process group described by torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; a lone process otherwise.

    Uses nccl when training on CUDA and gloo on CPU. Safe to call when the group already exists.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    device = resolve_device(device_preference, local_rank)
    if world_size > 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def all_reduce_mean(values: torch.Tensor, context: DistContext) -> torch.Tensor:
    """Mean of ``values`` over all processes (identity for a single process)."""
    if not context.distributed:
        return values
    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / context.world_size


def barrier(context: DistContext) -> None:
    """Wait for every process (no-op for a single process)."""
    if context.distributed:
        dist.barrier()


def shutdown(context: DistContext) -> None:
    """Leave the process group if this module's caller joined one."""
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()
