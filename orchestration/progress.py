"""Per-epoch progress lines of a training run, for Dagster's run log and the terminal."""

from __future__ import annotations

from collections.abc import Callable

from collab_iu.observer import TrainingObserver


def epoch_line(run_key: str, record: dict, stage: str, epochs: int | None = None) -> str:
    """`with_cf-r0.05-w8-s0 epoch 3/20: loss_label 0.412, val_map 0.3810, 2543 img/s` (pretrain epochs say so)."""
    of = f"/{epochs}" if epochs else ""
    losses = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k.startswith("loss_"))
    where = "pretrain epoch" if stage == "pretrain" else "epoch"
    compiled = f" (compiled in {record['compile_s']:.1f} s)" if "compile_s" in record else ""
    return (
        f"{run_key} {where} {record['epoch']}{of}: {losses}, val_map {record['val_map']:.4f}, "
        f"{record.get('images_per_s', 0):.0f} img/s{compiled}"
    )


class EpochLog(TrainingObserver):
    """Writes one `epoch_line` per epoch through `write` (e.g. a Dagster context's log.info)."""

    def __init__(self, write: Callable[[str], None], run_key: str):
        self._write, self._run_key, self._epochs = write, run_key, {}

    def started(self, config: dict) -> None:
        self._epochs = {"train": config["train"]["epochs"], "pretrain": config.get("pretrain_epochs")}

    def epoch_end(self, record: dict, stage: str) -> None:
        self._write(epoch_line(self._run_key, record, stage, self._epochs.get(stage)))
