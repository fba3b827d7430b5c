"""``python predict.py ckpt=... assimilate=true``: a trained observer over whole trajectories.

Measurements come from the split's clean trajectories through the data's measurement model
(``data.measurement``, seeded), or from a user's HDF5 file (``assimilate.file=...``) laid out as

    y      float (N, T, *space)   measurements; NaN where a point is not observed at that step
    truth  float (N, T, *space)   optional: the true states, for error curves

with the checkpoint's spatial grid. The first ``warmup`` frames (the model's training warm-up)
should carry measurements. Outputs in the run dir: ``assimilation.h5`` (assimilated and
open-loop states, the measurements and their mask), ``metrics.json`` (relative L2 per step of
both, their final and mean values) and plots (space-time images for 1-D fields, frames for 2-D,
and the error against time).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from neuropde.data.measurement import MeasurementModel
from neuropde.data.store import atomic_write_json
from neuropde.errors import UserError
from neuropde.losses import rel_l2_per_frame
from neuropde.tasks.assimilation import without_horizon

log = logging.getLogger(__name__)


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


def predict_assimilation(cfg, pcfg, task, dm, out: Path, split: str) -> dict:
    """The ``assimilate=true`` branch of :func:`neuropde.run.predict`."""
    import h5py

    from neuropde.callbacks.plots import plot_error_curves, plot_fields, plot_spacetime

    if not hasattr(task, "net") or not hasattr(task.net, "rollout"):
        raise UserError(f"assimilate=true needs an observer checkpoint (model=observer), this one is "
                        f"model={pcfg.model.family}")
    opts = dict(cfg.get("assimilate") or {})
    warmup = int(task.warmup)
    model = MeasurementModel.from_config(pcfg.data.get("measurement"))
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
        source = f"data.measurement of {pcfg.data.name}/{split}: {model}"
    batch = int(pcfg.data.loader.batch_size)
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
                          title=f"{pcfg.data.name}: relative L2 after the {warmup}-step warm-up")
    tmp = out / "assimilation.h5.tmp"
    with h5py.File(tmp, "w") as f:
        for name, value in (("assimilated", assimilated), ("open_loop", open_loop), ("y", y), ("mask", mask)):
            f.create_dataset(name, data=value.numpy())
        if truth is not None:
            f.create_dataset("truth", data=truth.numpy())
        f.attrs.update({"warmup": warmup, "split": split})
    os.replace(tmp, out / "assimilation.h5")
    atomic_write_json(out / "metrics.json", metrics)
    for i in range(min(int(cfg.get("n_plots", 2)), y.shape[0])):
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
