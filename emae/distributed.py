"""torch.distributed set-up for runs launched by ``torchrun`` (one process per device)."""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return dist.is_available() and dist.is_initialized()

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str, timeout_s: int) -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment; a single process otherwise.

    NCCL on GPUs, gloo on CPUs. ``timeout_s`` bounds every collective, so a process whose peer died
    fails with an error instead of waiting forever.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo()
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(rank, world, local)


def all_reduce_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a tensor over the processes (the tensor itself in a single process)."""
    if info.enabled and info.world_size > 1:
        values = values.clone()
        dist.all_reduce(values)
        values /= info.world_size
    return values


def shutdown_distributed() -> None:
    """Leave the process group, if one was joined (at the end of a finished run)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
