"""Supervised operator learning on trajectory windows: (B, T_in, *space) -> (B, T_out, *space).

Written once for every supervised operator family (sfno, fno, ...). Metrics: relative L2 per
sample (and per output frame), relative H¹, and the persistence baseline (repeat the last input
frame) on the same windows, so that an easy task cannot pass for a learned one.
"""
from __future__ import annotations

import torch
from torch import nn

from neuropde.losses import make_loss, rel_l2, rel_l2_per_frame, rel_sobolev
from neuropde.tasks.base import BaseTask


class OperatorTask(BaseTask):
    """Train ``net(x, t_out)`` on normalised fields; losses and metrics on physical fields.

    Parameters
    ----------
    net : module with ``forward(x: (B, T_in, *space), t_out: int) -> (B, t_out, *space)``.
    t_out : number of output frames trained on.
    loss : ``rel_l2`` | ``h1`` | ``sobolev`` (relative H^``loss_s``).
    domain_length : side of the periodic domain (for Sobolev norms).
    persistence : log the repeat-the-last-input-frame baseline (trajectories; off for input→output pairs).
    """

    def __init__(self, net: nn.Module, t_out: int, optimizer: dict, scheduler: dict | None = None,
                 stats: dict | None = None, loss: str = "rel_l2", loss_s: float = -1.0,
                 domain_length: float = 1.0, persistence: bool = True):
        super().__init__(optimizer, scheduler, stats)
        self.persistence = bool(persistence)
        self.net, self.t_out, self.L = net, int(t_out), float(domain_length)
        self.loss_fn = make_loss(loss, loss_s, self.L)

    def forward(self, x: torch.Tensor, t_out: int | None = None) -> torch.Tensor:
        """Physical fields in, physical fields out: (B, T_in, *space) -> (B, t_out, *space)."""
        return self.denormalize(self.net(self.normalize(x), t_out or self.t_out))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.loss_fn(self(x, y.shape[1]), y)
        self.check_finite(loss)
        self.log("train/loss", loss, prog_bar=True, batch_size=x.shape[0])
        return loss

    def _evaluate(self, batch, stage: str) -> torch.Tensor:
        x, y = batch
        pred = self(x, y.shape[1])
        n = x.shape[0]
        err = rel_l2(pred, y)
        self.log(f"{stage}/loss", self.loss_fn(pred, y), batch_size=n, sync_dist=True)
        self.log(f"{stage}/rel_l2", err, prog_bar=True, batch_size=n, sync_dist=True)
        self.log(f"{stage}/h1", rel_sobolev(pred, y, 1.0, self.L), batch_size=n, sync_dist=True)
        if self.persistence:
            persistence = x[:, -1:].expand_as(y)
            self.log(f"{stage}/rel_l2_persistence", rel_l2(persistence, y), batch_size=n, sync_dist=True)
        if stage == "test":
            for t, e in enumerate(rel_l2_per_frame(pred, y)):
                self.log(f"test/rel_l2_frame{t + 1:02d}", e, batch_size=n, sync_dist=True)
        return pred

    def validation_step(self, batch, batch_idx):
        pred = self._evaluate(batch, "val")
        if batch_idx == 0:
            self.example = (batch[1][:1].detach().cpu(), pred[:1].detach().cpu())

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    def predict_step(self, batch, batch_idx):
        x, y = batch
        return self(x, y.shape[1])

    def refine(self, x: torch.Tensor, t_out: int | None = None, **options):
        """Spectral-Refiner: fine-tune the output operator per trajectory on the Navier–Stokes
        residual of the data it was trained on; x (B, T_in, n, n) -> a ``Refinement`` (``.refined``
        (B, t_out, n, n), ``.estimate``, ``.estimate_refined``). ``options`` as
        :func:`neuropde.models.sfno_refine.refine` (steps, modes, learning rates)."""
        from neuropde.errors import UserError
        from neuropde.models.sfno_refine import refine
        from neuropde.tasks.prediction import residual_solver

        data = self.meta.get("config", {}).get("data", {})
        data = {**data, "resolution": int(x.shape[-1])}
        solver = residual_solver(data, x.device)
        if solver is None:
            raise UserError("refine needs a model trained on Navier–Stokes data (the residual is that equation's)")
        return refine(self, x, t_out or self.t_out, solver, float(data["generator"].get("dt_snap", 1.0)), **options)
