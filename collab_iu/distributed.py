"""Data-parallel training with PyTorch's own DDP, when a run is launched by `torchrun`.

`torchrun --nproc_per_node N ...` starts N processes with RANK, LOCAL_RANK, WORLD_SIZE and MASTER_ADDR in
their environment; `train_run` then trains one run across them: every rank builds the same model (same
seed), takes its shard (`shard`) of every global batch (`train.batch_size` stays the global batch size),
DistributedDataParallel averages the gradients (nccl on GPUs, gloo on CPUs), and rank 0 alone validates,
writes checkpoints and the run's files, scores the test items and reports to the observers. Without
torchrun nothing changes: one process, the same code path.

Per-rank batch statistics (BatchNorm) and augmentation draws differ from one process's, so a DDP run
matches a single-process run of the same seed closely but not bit for bit (tests/test_distributed.py
states the tolerance); a DDP run resumes from its last checkpoint like any run.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


def launched() -> bool:
    """Whether this process is one of several started by torchrun (WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank() -> int:
    """This process's rank (0 without torchrun)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0: the process that validates, writes and reports."""
    return rank() == 0


def start(device: torch.device) -> torch.device:
    """Join torchrun's process group (once) and return this rank's device (its GPU on CUDA)."""
    if not launched():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def active() -> bool:
    """Whether training runs across processes now (the process group is up, with more than one rank)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model as DistributedDataParallel (its parameters broadcast from rank 0), or as it is."""
    if not active():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def shard(indices: np.ndarray) -> np.ndarray:
    """This rank's share of a global batch (every world_size-th item, from its rank on)."""
    return indices[rank() :: world_size()] if active() else indices


def sum_across(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-key sums over the ranks (one all_reduce per key), e.g. an epoch's summed loss terms."""
    if active():
        for value in values.values():
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return values


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast(value: Any) -> Any:
    """Rank 0's `value`, on every rank (any picklable object)."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank ([value] without torchrun)."""
    if not active():
        return [value]
    values: list[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    return values
