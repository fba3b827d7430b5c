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
    channels, in_channels : fields per frame of the output and of the input (the input's extra
        channels are a data set's constant fields). With more than one input channel, batches are
        (B, T, C, *space) and the network sees frames × channels as its channels: it is built with
        ``T_in · in_channels`` inputs and ``T_out · channels`` outputs (``neuropde.mul`` in the
        model configs). One channel: (B, T, *space), as every generated data set.
    """

    def __init__(self, net: nn.Module, t_out: int, optimizer: dict, scheduler: dict | None = None,
                 stats: dict | None = None, loss: str = "rel_l2", loss_s: float = -1.0,
                 domain_length: float = 1.0, persistence: bool = True, channels: int = 1,
                 in_channels: int | None = None):
        super().__init__(optimizer, scheduler, stats)
        self.persistence = bool(persistence)
        self.channels = int(channels)
        self.in_channels = int(in_channels or channels)
        self.channel_axis = self.in_channels > 1  # batches carry a channel axis (B, T, C, *space)
        self.net, self.t_out, self.L = net, int(t_out), float(domain_length)
        self.loss_fn = make_loss(loss, loss_s, self.L)

    def forward(self, x: torch.Tensor, t_out: int | None = None) -> torch.Tensor:
        """Physical fields in, physical fields out: (B, T_in, *space) -> (B, t_out, *space), or with
        channels (B, T_in, in_channels, *space) -> (B, t_out, channels, *space)."""
        t_out = t_out or self.t_out
        if not self.channel_axis:
            return self.denormalize(self.net(self.normalize(x), t_out))
        if x.dim() < 4 or x.shape[2] != self.in_channels:
            raise ValueError(f"this model takes (B, T, {self.in_channels}, *space) fields, got {tuple(x.shape)}")
        out = self.net(self.normalize(x).flatten(1, 2), t_out * self.channels)  # frames × channels as channels
        return self.denormalize(out.unflatten(1, (t_out, self.channels)))

    def last_input_frame(self, x: torch.Tensor) -> torch.Tensor:
        """The persistence baseline's frame: the last input frame's output channels, (B, 1, ...)."""
        return x[:, -1:, :self.channels] if self.channel_axis else x[:, -1:]

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
            persistence = self.last_input_frame(x).expand_as(y)
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
