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

import logging
from pathlib import Path

import numpy as np
import torch

from neuropde.data.measurement import MeasurementModel, noisy, random_points
from neuropde.errors import UserError
from neuropde.losses import rel_l2, rel_l2_frames, rel_l2_per_frame, rel_sobolev
from neuropde.tasks.base import BaseTask

log = logging.getLogger(__name__)


def without_horizon(mask: torch.Tensor, warmup: int) -> torch.Tensor:
    """The open-loop version of a measurement mask (B, T, *space): the warm-up frames only."""
    mask = mask.clone()
    mask[:, warmup:] = 0
    return mask


class ObserverTask(BaseTask):
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
            loss = rel_l2_frames(self.denormalize(self.net.predict(prev)), nxt, self.squared).mean()
        else:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.global_step))
            meas, mask = self._training_measurements(z, g)
            out = self.net.rollout(meas, mask, tbptt=self.tbptt)
            states = self.denormalize(out["states"])
            loss = rel_l2_frames(states, traj, self.squared).mean()
            if self.measurement_weight:
                meas_phys = self.denormalize(meas) * mask
                recon = self.denormalize(self.net.observation(out["states"].flatten(0, 1)[:, None])
                                         ).reshape(states.shape) * mask
                measured = mask.flatten(2).amax(2) > 0
                err = rel_l2_frames(recon, meas_phys, self.squared)
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

    def predict_split(self, datamodule, split: str, out, options: dict) -> dict:
        """Open-loop forecasts of the split's windows (the base prediction), or with
        ``assimilate=true`` assimilation over whole trajectories (:func:`predict_assimilation`)."""
        if (options.get("assimilate") or {}).get("enabled"):
            return predict_assimilation(self, datamodule, split, Path(out), options)
        return super().predict_split(datamodule, split, out, options)

    def assimilate(self, y: torch.Tensor, mask: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        """State estimates from measurements: y, mask (N, T, *space) physical values and 1 where a
        point is measured (0 elsewhere; the first ``warmup`` frames should be measured) -> (N, T, *space)."""
        return run_observer(self, y * mask, mask, batch_size)


# ---------------------------------------------------------------- predict.py assimilate=true
# ``python predict.py ckpt=... assimilate=true``: a trained observer over whole trajectories.
#
# Measurements come from the split's clean trajectories through the data's measurement model
# (``data.measurement``, seeded), or from a user's HDF5 file (``assimilate.file=...``) laid out as
#
#     y      float (N, T, *space)   measurements; NaN where a point is not observed at that step
#     truth  float (N, T, *space)   optional: the true states, for error curves
#
# with the checkpoint's spatial grid. The first ``warmup`` frames (the model's training warm-up)
# should carry measurements. Outputs in the run dir: ``assimilation.h5`` (assimilated and
# open-loop states, the measurements and their mask), ``metrics.json`` (relative L2 per step of
# both, their final and mean values) and plots (space-time images for 1-D fields, frames for 2-D,
# and the error against time).


@torch.no_grad()
def run_observer(task, y: torch.Tensor, mask: torch.Tensor, batch_size: int = 16, device=None) -> torch.Tensor:
    """The observer's state estimates (physical) from physical measurements: (N, T, *space)."""
    device = device or next(task.parameters()).device
    out = []
    for i in range(0, y.shape[0], batch_size):
        yb, mb = y[i:i + batch_size].to(device), mask[i:i + batch_size].to(device)
        states = task.net.rollout(task.normalize(yb) * mb, mb)["states"]
        out.append(task.denormalize(states).cpu())
    return torch.cat(out)


def read_measurements(path: str | Path, space: tuple[int, ...], warmup: int):
    """y, mask, truth (or None) from a user's HDF5 file (layout in the module docstring)."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise UserError(f"assimilate.file={path} does not exist")
    with h5py.File(path, "r") as f:
        if "y" not in f:
            raise UserError(f"{path} has no dataset 'y' (measurements (N, T, *space), NaN where unobserved); "
                            f"it holds: {', '.join(f.keys()) or 'nothing'}")
        y = torch.as_tensor(np.asarray(f["y"], dtype=np.float32))
        truth = torch.as_tensor(np.asarray(f["truth"], dtype=np.float32)) if "truth" in f else None
    if y.dim() != 2 + len(space) or tuple(y.shape[2:]) != tuple(space):
        raise UserError(f"{path}: y has shape {tuple(y.shape)}; this model needs (N, T, {', '.join(map(str, space))}) "
                        "(N trajectories, T steps, the training grid)")
    if y.shape[1] <= warmup:
        raise UserError(f"{path}: y has {y.shape[1]} steps; the model needs more than its {warmup} warm-up steps")
    if truth is not None and truth.shape != y.shape:
        raise UserError(f"{path}: truth has shape {tuple(truth.shape)}, y has {tuple(y.shape)}; they must match")
    mask = torch.isfinite(y).float()
    return torch.nan_to_num(y) * mask, mask, truth


def predict_assimilation(task: ObserverTask, dm, split: str, out: Path, options: dict) -> dict:
    """The ``assimilate=true`` prediction of :meth:`ObserverTask.predict_split`."""
    from neuropde.callbacks.plots import plot_error_curves, plot_fields, plot_spacetime
    from neuropde.tasks.prediction import write_outputs

    opts = dict(options.get("assimilate") or {})
    warmup = int(task.warmup)
    model = MeasurementModel.from_config(dm.cfg.get("measurement"))
    if opts.get("file"):
        truth_split = dm.load(split)
        y, mask, truth = read_measurements(opts["file"], tuple(truth_split.shape[2:]), warmup)
        source = str(opts["file"])
    else:
        truth = dm.load(split)
        if opts.get("steps"):
            truth = truth[:, :warmup + int(opts["steps"])]
        seed, scale = int(opts.get("seed", 0)), float(task.norm_std)
        y, mask = model.measure(truth, warmup, torch.Generator().manual_seed(seed), scale)
        source = f"data.measurement of {dm.cfg['name']}/{split}: {model}"
    batch = int(dm.cfg["loader"]["batch_size"])
    assimilated = run_observer(task, y, mask, batch)
    open_loop = run_observer(task, y, without_horizon(mask, warmup), batch)  # same warm-up information
    metrics = {"split": split, "warmup": warmup, "steps": int(y.shape[1] - warmup), "measurements": source,
               "trajectories": int(y.shape[0])}
    if truth is not None:
        err_a = rel_l2_per_frame(assimilated[:, warmup:], truth[:, warmup:])
        err_o = rel_l2_per_frame(open_loop[:, warmup:], truth[:, warmup:])
        metrics.update({"rel_l2_per_step": err_a.tolist(), "rel_l2_openloop_per_step": err_o.tolist(),
                        "rel_l2": float(err_a.mean()), "rel_l2_final": float(err_a[-1]),
                        "rel_l2_openloop": float(err_o.mean()), "rel_l2_openloop_final": float(err_o[-1])})
        plot_error_curves({"assimilated": err_a.numpy(), "open loop": err_o.numpy()}, out / "plots" / "error_vs_step.png",
                          title=f"{dm.cfg['name']}: relative L2 after the {warmup}-step warm-up")
    arrays = {"assimilated": assimilated, "open_loop": open_loop, "y": y, "mask": mask}
    arrays.update({"truth": truth} if truth is not None else {})
    write_outputs(out, metrics, arrays, {"warmup": warmup, "split": split}, file="assimilation.h5")
    for i in range(min(int(options.get("n_plots", 2)), y.shape[0])):
        fields = {"truth": truth[i].numpy()} if truth is not None else {"measurements": y[i].numpy()}
        fields.update({"open loop": open_loop[i].numpy(), "assimilated": assimilated[i].numpy()})
        path = out / "plots" / f"assimilation_{i:03d}.png"
        if y.dim() == 3:
            plot_spacetime(fields, path, title=f"{split} trajectory {i}",
                           truth_key="truth" if truth is not None else "measurements")
        elif truth is not None:
            plot_fields(truth[i].numpy(), assimilated[i].numpy(), path, title=f"{split} trajectory {i}: assimilated")
    if truth is not None:
        log.info("assimilated rel L2 at the last step %.3g (open loop %.3g); outputs in %s",
                 metrics["rel_l2_final"], metrics["rel_l2_openloop_final"], out)
    return metrics
