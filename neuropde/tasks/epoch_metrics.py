"""Validation and test metrics that are gathered over a whole epoch and logged once at its end.

Medians over samples (EquiNO), means over trajectories (Φ-ROM) and ratios of sums over points
(PINNs) are not means of per-batch values, so these tasks cannot log per batch as the others do:
each collects its own per-batch tensors in ``self._eval`` and says how they reduce.
"""
from __future__ import annotations

import torch


class EpochMetrics:
    """Mixin of a task (before :class:`~neuropde.tasks.base.BaseTask` in its bases) that logs its
    validation and test metrics at the end of each epoch.

    The task's ``validation_step``/``test_step`` add to ``self._eval`` (a dict, its own layout:
    lists of per-sample tensors, running sums, …) and may store ``self._eval["example"]`` =
    (truth, prediction) for the plot callback; :meth:`epoch_metrics` reduces the rest to
    ``{name: value}``, logged as ``"{stage}/{name}"``, with the names in ``prog_bar`` on the bar.
    """

    prog_bar: tuple[str, ...] = ("rel_l2",)

    def epoch_metrics(self, ev: dict) -> dict[str, float | torch.Tensor]:
        """The epoch's metrics from what ``_evaluate`` collected (``"example"`` removed)."""
        raise NotImplementedError

    def _log_epoch(self, stage: str) -> None:
        ev, self._eval = self._eval, {}
        if not ev:  # nothing evaluated (e.g. a sanity check with no batches)
            return
        if "example" in ev:
            self.example = ev.pop("example")
        for name, value in self.epoch_metrics(ev).items():
            self.log(f"{stage}/{name}", value, prog_bar=name in self.prog_bar)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
