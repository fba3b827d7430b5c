"""Wall time of the training epochs (training batches only: validation runs after the epoch ends)."""
from __future__ import annotations

import statistics
import time

import lightning as L
import torch


class EpochTimer(L.Callback):
    """Records the wall time of every training epoch; :attr:`median` is what ``metrics.json`` reports
    as ``sec_per_epoch`` (the median is robust to the first epoch's warm-up)."""

    def __init__(self):
        self.seconds: list[float] = []
        self._start = None

    def _sync(self, pl_module) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._start is not None:
            self._sync(pl_module)
            self.seconds.append(time.perf_counter() - self._start)
            self._start = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None
