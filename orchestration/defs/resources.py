"""Resources: where training computes."""

from __future__ import annotations

import dagster as dg


class ComputeResource(dg.ConfigurableResource):
    """The device trained models use: auto (CUDA when present), cpu or cuda."""

    device: str = "auto"

    def resolved(self) -> str:
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"compute device must be auto, cpu or cuda, got {self.device!r}")
        return self.device
