"""What a training run asked of its GPU: peak memory, and mean utilisation sampled while it trained.

On the CPU there is nothing to report (`report()` is empty). Utilisation comes from NVML through
`torch.cuda.utilization` (the `nvidia-ml-py` package); without it, `gpu_utilization` is None.
"""

from __future__ import annotations

import torch

SAMPLE_EVERY = 25  # training steps between two utilisation samples (one NVML query each)


class GpuStats:
    """Peak memory and utilisation samples of one run on `device`."""

    def __init__(self, device: torch.device):
        self.device, self.samples = device, []
        self.cuda = device.type == "cuda"
        self._utilization = self.cuda
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(device)

    def sample(self, step: int) -> None:
        """Every SAMPLE_EVERY steps, the device's current utilisation (%)."""
        if not self._utilization or step % SAMPLE_EVERY:
            return
        try:
            self.samples.append(float(torch.cuda.utilization(self.device)))
        except Exception:  # no NVML (nvidia-ml-py missing, or no permission): report None
            self._utilization = False

    def report(self) -> dict[str, float | None]:
        """{"gpu_memory_peak_gb", "gpu_utilization"} on CUDA; {} on the CPU."""
        if not self.cuda:
            return {}
        peak = torch.cuda.max_memory_allocated(self.device) / 2**30
        mean = sum(self.samples) / len(self.samples) if self.samples and self._utilization else None
        return {"gpu_memory_peak_gb": round(peak, 3), "gpu_utilization": None if mean is None else round(mean, 1)}
