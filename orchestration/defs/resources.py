"""Resources: where training computes, and how it is logged to Weights & Biases."""

from __future__ import annotations

import dagster as dg

from collab_iu.params import Params, ParamsError, params_from_dict


class ComputeResource(dg.ConfigurableResource):
    """The device trained models use: auto (CUDA when present), cpu or cuda."""

    device: str = "auto"

    def resolved(self) -> str:
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"compute device must be auto, cpu or cuda, got {self.device!r}")
        return self.device


class WandbResource(dg.ConfigurableResource):
    """Weights & Biases logging of the trained_model, cf_embeddings and evaluation assets (orchestration/tracking.py).

    `mode`: auto | online | offline | disabled; the default is params.yaml's wandb.mode.
    """

    mode: str = "auto"

    def apply(self, params: Params) -> Params:
        """`params` with this resource's W&B mode (validated by the params schema)."""
        try:
            wandb = params.wandb.model_copy(update={"mode": self.mode})
            return params_from_dict(params.model_dump(mode="json") | {"wandb": wandb.model_dump(mode="json")})
        except ParamsError as exc:
            raise ValueError(f"wandb resource: {exc}") from None
