"""Fitting across processes with :mod:`torch.distributed`: the process group's rank and
size, each rank's share of the demonstrations, and the reductions the fitter needs.

Every rank captures its own contiguous share of the demonstrations
(:func:`share`), so that gathering rows in rank order restores the file's order. The
fitter's sums are all-reduced (:func:`all_reduce_sum`); the thin SVD route's kept
activations are gathered (:func:`all_gather_rows`). With the NCCL backend the tensors
travel through the rank's current CUDA device and come back to where they live.

Sharded by layer (:meth:`~spectral_edit.core.statistics.SpectralStatistics.shard_layers`),
rank ``r`` owns the contiguous block :func:`layer_block` of the fitted layers: each
layer's sums are reduced to their owner only (:func:`reduce_sum_to`, reduce-scatter
semantics one layer at a time) or its rows gathered there (:func:`gather_rows_to`), and
the small fitted factors come back to every rank (:func:`all_gather_objects`).

:func:`process_group_from_environment` starts the default group where a launcher
(``torchrun``) has set ``WORLD_SIZE`` > 1 and none is running yet: NCCL where CUDA is
available, else Gloo.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def world() -> tuple[int, int]:
    """``(rank, world size)`` of the initialised default process group, else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def share(count: int, rank: int, size: int) -> range:
    """Rank ``rank``'s contiguous share of ``count`` items split over ``size`` ranks (the
    first ``count % size`` ranks get one more); the shares in rank order cover
    ``range(count)`` in order.

    Raises:
        ValueError: fewer items than ranks (a rank would fit on nothing).
    """
    if count < size:
        raise ValueError(f"{count} demonstrations cannot be split over {size} processes")
    return layer_block(count, rank, size)


def layer_block(count: int, rank: int, size: int) -> range:
    """The contiguous block of ``count`` items (layers) rank ``rank`` of ``size`` owns:
    the split of :func:`share`, but a rank may own none (``count < size``)."""
    base, extra = divmod(count, size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def owner_of(index: int, count: int, size: int) -> int:
    """The rank whose :func:`layer_block` of ``count`` items holds item ``index``."""
    return next(r for r in range(size) if index in layer_block(count, r, size))


def _comm_device(tensor: torch.Tensor) -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return tensor.device


def all_reduce_sum(tensor: torch.Tensor) -> None:
    """Sum ``tensor`` over every rank, in place (a no-op in one process)."""
    if world()[1] == 1:
        return
    device = _comm_device(tensor)
    if device == tensor.device:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return
    # through the GPU one slice at a time: a layer's d × d sums, not all L of them
    for part in tensor.unsqueeze(0) if tensor.ndim < 3 else tensor:
        moved = part.to(device)
        dist.all_reduce(moved, op=dist.ReduceOp.SUM)
        part.copy_(moved)


def all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` ``(n_r, ...)`` concatenated along rows in rank order (the
    row counts may differ; trailing shapes must agree). One process: ``tensor``."""
    size = world()[1]
    if size == 1:
        return tensor
    padded, counts = _padded_rows(tensor)
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded)
    return _unpadded(parts, counts, tensor.device)


def _padded_rows(tensor: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """This rank's rows zero-padded to the most rows any rank has (on the communication
    device), and every rank's row count (a collective: every rank calls it)."""
    rank, size = world()
    device = _comm_device(tensor)
    counts = torch.zeros(size, dtype=torch.long, device=device)
    counts[rank] = tensor.shape[0]
    dist.all_reduce(counts, op=dist.ReduceOp.SUM)
    padded = torch.zeros((int(counts.max()), *tensor.shape[1:]), dtype=tensor.dtype, device=device)
    padded[: tensor.shape[0]] = tensor.to(device)
    return padded, [int(n) for n in counts.tolist()]


def _unpadded(parts: list[torch.Tensor], counts: list[int], device: torch.device) -> torch.Tensor:
    """The gathered ``parts`` without their padding rows, concatenated, on ``device``."""
    return torch.cat([part[:n] for part, n in zip(parts, counts, strict=True)]).to(device)


def reduce_sum_to(tensor: torch.Tensor, owner: int) -> None:
    """Sum ``tensor`` over every rank into rank ``owner``'s ``tensor``, in place; the other
    ranks' ``tensor`` is left undefined (a no-op in one process). One layer's sums at a
    time, this is a reduce-scatter whose input never has to be whole on any rank."""
    rank, size = world()
    if size == 1:
        return
    device = _comm_device(tensor)
    moved = tensor if device == tensor.device else tensor.to(device)
    dist.reduce(moved, dst=owner, op=dist.ReduceOp.SUM)
    if rank == owner and moved is not tensor:
        tensor.copy_(moved)


def gather_rows_to(tensor: torch.Tensor, owner: int) -> torch.Tensor | None:
    """On rank ``owner``, every rank's ``tensor`` ``(n_r, ...)`` concatenated along rows
    in rank order (as :func:`all_gather_rows`); ``None`` on the other ranks. One
    process: ``tensor``."""
    rank, size = world()
    if size == 1:
        return tensor
    padded, counts = _padded_rows(tensor)
    parts = [torch.empty_like(padded) for _ in range(size)] if rank == owner else None
    dist.gather(padded, parts, dst=owner)
    return None if parts is None else _unpadded(parts, counts, tensor.device)


def all_gather_objects(value: T) -> list[T]:
    """Every rank's picklable ``value``, in rank order (``[value]`` in one process)."""
    size = world()[1]
    if size == 1:
        return [value]
    gathered: list[Any] = [None] * size
    dist.all_gather_object(gathered, value)
    return gathered


def launched_ranks() -> int:
    """The world size a launcher (``torchrun``) set in ``WORLD_SIZE``; 1 without one."""
    try:
        return max(int(os.environ.get("WORLD_SIZE", "1")), 1)
    except ValueError:
        return 1


@contextmanager
def process_group_from_environment() -> Iterator[tuple[int, int]]:
    """Within the block, the default process group of a ``torchrun`` launch (started
    here where ``WORLD_SIZE`` > 1 and none runs, destroyed on exit; CUDA ranks use their
    ``LOCAL_RANK`` device and NCCL, others Gloo). Yields ``(rank, world size)``."""
    started = False
    if launched_ranks() > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        started = True
    try:
        yield world()
    finally:
        if started:
            dist.destroy_process_group()
