"""Training and evaluation of recursive observers (prediction + data assimilation) on trajectories.

A training sample is a window of ``warmup + horizon`` clean frames (B, T, *space). Measurements
are drawn on the fly from the clean frames (the loss targets stay clean, never fed to the
correction): during the warm-up every frame is measured; over the horizon each trajectory gets
its own share of measured steps, its own observed fraction of points and its own noise level,
drawn from the task's training lists, so one model serves open-loop prediction (no
measurements) and assimilation of sparse, noisy, irregular measurements.

Evaluation uses the data set's measurement model (``data.measurement``) with a fixed seed per
batch, and reports the assimilated and the open-loop error over the horizon: ``rel_l2`` (mean
over horizon frames), ``rel_l2_final`` (last frame) and ``rel_l2_openloop``(``_final``).
"""
from __future__ import annotations

import torch

from neuropde.data.measurement import MeasurementModel, noisy, random_points
from neuropde.errors import UserError
from neuropde.losses import rel_l2, rel_l2_per_frame, rel_sobolev
from neuropde.tasks.base import BaseTask


def without_horizon(mask: torch.Tensor, warmup: int) -> torch.Tensor:
    """The open-loop version of a measurement mask (B, T, *space): the warm-up frames only."""
    mask = mask.clone()
    mask[:, warmup:] = 0
    return mask


class AssimilationTask(BaseTask):
    """Train a :class:`~neuropde.models.observer.RecursiveObserver` on clean trajectory windows.

    Parameters
    ----------
    net : RecursiveObserver.
    warmup : H_w, frames measured at every step before the horizon (= data.window.t_in).
    measurement : the data set's measurement model (evaluation).
    train_fractions, train_noise, train_probability : per-trajectory training draws of the
        observed share of points, relative noise σ and measurement probability per horizon step
        (0: an open-loop trajectory).
    loss : ``rel_l2`` (mean over frames of ‖ẑ_k − z_k‖/‖z_k‖) or ``rel_l2_squared`` (of its
        square, the reference notes' form, in which the O(1) errors of open-loop chaotic frames
        outweigh the small errors of assimilated frames by their ratio).
    measurement_weight : λ of the measurement-reconstruction term.
    tbptt : detach the state every this many steps.
    pretrain_epochs : epochs of one-step teacher-forced training of the predictor before the
        unrolled joint training.
    domain_length : side of the periodic domain (for the H¹ metric).
    seed : seed of the training draws (with the global step: a resumed run draws the same).
    """

    def __init__(self, net, optimizer: dict, scheduler: dict | None = None, stats: dict | None = None,
                 warmup: int = 10, measurement: dict | None = None,
                 train_fractions=(1.0, 0.25, 0.05), train_noise=(0.0, 0.01, 0.05, 0.1),
                 train_probability=(0.0, 0.1, 0.25, 0.5), loss: str = "rel_l2", measurement_weight: float = 0.1,
                 tbptt: int | None = 10, pretrain_epochs: int = 0, domain_length: float = 1.0, seed: int = 0):
        super().__init__(optimizer, scheduler, stats)
        self.net, self.warmup = net, int(warmup)
        self.measurement = MeasurementModel.from_config(measurement)
        self.train_fractions = [float(v) for v in train_fractions]
        self.train_noise = [float(v) for v in train_noise]
        self.train_probability = [float(v) for v in train_probability]
        if loss not in ("rel_l2", "rel_l2_squared"):
            raise UserError(f"model.task.loss={loss}: choose rel_l2 or rel_l2_squared")
        self.squared = loss == "rel_l2_squared"
        self.measurement_weight, self.tbptt = float(measurement_weight), tbptt
        self.pretrain_epochs, self.L, self.seed = int(pretrain_epochs), float(domain_length), int(seed)
        self.persistence = False  # predict.py: no repeat-the-last-frame baseline here

    @property
    def ndim(self) -> int:
        return self.net.dim

    def forward(self, x: torch.Tensor, t_out: int | None = None) -> torch.Tensor:
        """Open-loop forecast from the last input frame: (B, T_in, *space) -> (B, t_out, *space)."""
        return self.denormalize(self.net(self.normalize(x[:, -1:]), t_out or 1))

    # ------------------------------------------------------------------------------- training
    def _training_measurements(self, z: torch.Tensor, generator: torch.Generator):
        """Per-trajectory random measurement settings -> y, mask (B, T, *space)."""
        B, T, space = z.shape[0], z.shape[1], tuple(z.shape[2:])
        pick = lambda values: torch.tensor([values[int(i)] for i in torch.randint(  # noqa: E731
            len(values), (B,), generator=generator)])
        points = random_points(B, space, pick(self.train_fractions), generator, z.device)
        q = pick(self.train_probability).to(z.device)
        times = torch.ones(B, T, dtype=torch.bool, device=z.device)
        times[:, self.warmup:] = torch.rand(B, T - self.warmup, generator=generator).to(z.device) < q[:, None]
        mask = points[:, None] * times.reshape(B, T, *([1] * len(space))).to(z.dtype)
        return noisy(z, pick(self.train_noise), 1.0, generator) * mask, mask

    def training_step(self, batch, batch_idx):
        x, y = batch
        traj = torch.cat([x, y], dim=1)
        z = self.normalize(traj)
        if self.current_epoch < self.pretrain_epochs:
            # stage 1: the predictor alone, one step from every clean frame (teacher forcing)
            prev, nxt = z[:, :-1].reshape(-1, 1, *z.shape[2:]), traj[:, 1:].reshape(-1, 1, *z.shape[2:])
            loss = _rel(self.denormalize(self.net.predict(prev)), nxt, self.squared)
        else:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.global_step))
            meas, mask = self._training_measurements(z, g)
            out = self.net.rollout(meas, mask, tbptt=self.tbptt)
            states = self.denormalize(out["states"])
            loss = _rel(states, traj, self.squared)
            if self.measurement_weight:
                meas_phys = self.denormalize(meas) * mask
                recon = self.denormalize(self.net.observation(out["states"].flatten(0, 1)[:, None])
                                         ).reshape(states.shape) * mask
                measured = mask.flatten(2).amax(2) > 0
                err = _rel_frames(recon, meas_phys, self.squared)
                loss = loss + self.measurement_weight * err[measured].mean()
        self.check_finite(loss)
        self.log("train/loss", loss, prog_bar=True, batch_size=x.shape[0])
        return loss

    # ----------------------------------------------------------------------------- evaluation
    def _evaluate(self, batch, batch_idx: int, stage: str):
        x, y = batch
        traj = torch.cat([x, y], dim=1)
        z = self.normalize(traj)
        n, w = x.shape[0], self.warmup
        metrics = {}
        g = torch.Generator().manual_seed(10_007 * batch_idx + {"val": 1, "test": 2}.get(stage, 3))
        meas, mask = self.measurement.measure(z, w, g, scale=1.0)  # normalised fields: noise σ·1
        for name, open_loop in (("", False), ("_openloop", True)):
            out = self.net.rollout(meas, without_horizon(mask, w) if open_loop else mask)
            est, truth = self.denormalize(out["states"])[:, w:], traj[:, w:]
            metrics[f"{stage}/rel_l2{name}"] = rel_l2(est, truth)
            metrics[f"{stage}/rel_l2{name}_final"] = rel_l2(est[:, -1], truth[:, -1])
            if not open_loop:
                metrics[f"{stage}/h1"] = rel_sobolev(est, truth, 1.0, self.L, self.ndim)
                metrics[f"{stage}/gate"] = torch.nanmean(out["gate"])
                if stage == "test":
                    for t, e in enumerate(rel_l2_per_frame(est, truth)):
                        metrics[f"test/rel_l2_frame{t + 1:02d}"] = e
                pred = est
        for k, v in metrics.items():
            self.log(k, v, batch_size=n, sync_dist=True, prog_bar=k.endswith("rel_l2"))
        return pred

    def validation_step(self, batch, batch_idx):
        pred = self._evaluate(batch, batch_idx, "val")
        if batch_idx == 0:
            self.example = (batch[1][:1].detach().cpu(), pred[:1].detach().cpu())

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, batch_idx, "test")


def _rel_frames(pred: torch.Tensor, true: torch.Tensor, squared: bool) -> torch.Tensor:
    """‖pred_k − true_k‖ / ‖true_k‖ (squared on request) per sample and frame: (B, T, *space) -> (B, T)."""
    num = (pred - true).flatten(2).square().sum(2)
    ratio = num / true.flatten(2).square().sum(2).clamp(min=1e-12)
    return ratio if squared else ratio.clamp(min=1e-12).sqrt()


def _rel(pred: torch.Tensor, true: torch.Tensor, squared: bool) -> torch.Tensor:
    """Mean over samples and frames of :func:`_rel_frames`."""
    return _rel_frames(pred, true, squared).mean()
