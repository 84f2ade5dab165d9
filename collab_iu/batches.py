"""The input path of training and scoring: batches of cached uint8 images on the model's device.

Two ways, one interface (`ImageSource.batches`), chosen by `train.input`:

- `device`: the whole uint8 cache is copied to the device once and batches are gathered there (one
  `index_select` per batch, no host work per step). `auto` takes it when the cache fits in
  `train.input_memory_fraction` of the device's free memory (on a GPU; on the CPU the cache stays
  memory-mapped);
- `prefetch`: a background thread gathers each batch from the memory-mapped cache (into pinned memory on
  CUDA) while the device computes the previous one; the copy to the device is asynchronous.

Both yield the same tensors in the same order, so a run's result does not depend on the way.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
import torch

InputMode = Literal["auto", "device", "prefetch"]
PREFETCH = 2  # batches gathered ahead of the one being computed


class ImageSource:
    """Batches of a cache's rows (images: uint8 N x H x W x 3; or cached features) on `device`."""

    def __init__(self, images: np.ndarray, device: torch.device, on_device: bool):
        self.images, self.device, self.on_device = images, device, on_device
        self._resident = _upload(images, device) if on_device else None

    @property
    def mode(self) -> str:
        return "device" if self.on_device else "prefetch"

    def batch(self, rows: np.ndarray) -> torch.Tensor:
        """The images of `rows`, on the device."""
        if self._resident is not None:
            return self._resident.index_select(0, torch.from_numpy(np.asarray(rows, np.int64)).to(self.device))
        return _host_batch(self.images, rows, self.device).to(self.device, non_blocking=True)

    def batches(self, rows: Sequence[np.ndarray]) -> Iterator[torch.Tensor]:
        """The images of each row array in turn, on the device; gathered ahead on a thread when not resident."""
        if self._resident is not None:
            yield from (self.batch(r) for r in rows)
            return
        for host in _prefetched(self.images, rows, self.device):
            yield host.to(self.device, non_blocking=True)


def image_source(
    images: np.ndarray, device: torch.device, mode: InputMode = "auto", memory_fraction: float = 0.5
) -> ImageSource:
    """The ImageSource of `mode` (see the module docstring) for a run on `device`."""
    if mode == "device":
        return ImageSource(images, device, True)
    if mode == "prefetch":
        return ImageSource(images, device, False)
    return ImageSource(images, device, fits_on_device(images.nbytes, device, memory_fraction))


def fits_on_device(nbytes: int, device: torch.device, memory_fraction: float) -> bool:
    """Whether `nbytes` fit in `memory_fraction` of the GPU's free memory (never on the CPU: the memory-mapped
    cache is already there, a copy would only double it)."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= memory_fraction * free


def _upload(images: np.ndarray, device: torch.device, chunk: int = 4096) -> torch.Tensor:
    """The whole cache on `device`, copied a chunk of images at a time (no second full copy on the host)."""
    resident = torch.from_numpy(np.empty((0, *images.shape[1:]), images.dtype))  # the cache's dtype, in torch
    resident = torch.empty(images.shape, dtype=resident.dtype, device=device)
    for start in range(0, len(images), chunk):
        resident[start : start + chunk].copy_(torch.from_numpy(np.array(images[start : start + chunk])))
    return resident


def _host_batch(images: np.ndarray, rows: np.ndarray, device: torch.device) -> torch.Tensor:
    batch = torch.from_numpy(np.ascontiguousarray(images[rows]))
    return batch.pin_memory() if device.type == "cuda" else batch  # pinned: the copy to the GPU is asynchronous


def _prefetched(images: np.ndarray, rows: Sequence[np.ndarray], device: torch.device) -> Iterator[torch.Tensor]:
    """Host batches gathered by a background thread, PREFETCH ahead; its errors are raised here."""
    ready: queue.Queue = queue.Queue(maxsize=PREFETCH)
    stop = threading.Event()

    def gather() -> None:
        try:
            for r in rows:
                if stop.is_set():
                    return
                ready.put(_host_batch(images, r, device))
        except BaseException as exc:  # handed to the consumer, raised there
            ready.put(exc)
        ready.put(None)

    worker = threading.Thread(target=gather, name="collab_iu-prefetch", daemon=True)
    worker.start()
    try:
        while (item := ready.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a gatherer waiting on a full queue
            try:
                ready.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.05)
