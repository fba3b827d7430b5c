"""What ``predict.py`` does with a task: the shared writer of its outputs, and the prediction of
trajectory windows that every operator family uses (:meth:`BaseTask.predict_split` calls it).

A family that predicts its own way overrides ``predict_split`` in its task file and writes its
outputs through :func:`write_outputs`, so that every ``predictions.h5`` and ``metrics.json`` is
written atomically (a file under its final name is always complete).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from neuropde.errors import UserError

log = logging.getLogger(__name__)


def write_outputs(out: Path, metrics: dict, arrays: dict | None = None, attrs: dict | None = None,
                  file: str = "predictions.h5") -> None:
    """Write ``arrays`` (name -> tensor or array) and ``attrs`` to ``out/file`` and ``metrics`` to
    ``out/metrics.json``, each through a temporary file and a rename."""
    import h5py

    from neuropde.data.store import atomic_write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if arrays is not None:
        tmp = out / f"{file}.tmp"
        with h5py.File(tmp, "w") as f:
            for name, value in arrays.items():
                f.create_dataset(name, data=value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value))
            f.attrs.update(attrs or {})
        os.replace(tmp, out / file)
    atomic_write_json(out / "metrics.json", metrics)


def residual_solver(data: dict, device: torch.device):
    """The NavierStokes2D whose residual judges predictions on this data (None for other equations)."""
    if data.get("equation") != "navier_stokes":
        return None
    from neuropde.pde.residual import solver_for

    g = data["generator"]
    return solver_for(int(data["resolution"]), float(g["L"]), float(g["nu"]), str(g["forcing"]), torch.float64,
                      device, kolmogorov_k=int(g.get("kolmogorov_k", 4)))


def _estimate(x: torch.Tensor, pred: torch.Tensor, solver, dt: float, accuracy: int = 4) -> torch.Tensor:
    """‖R(ω_θ)‖ in L²(0,T;H⁻¹) of each predicted trajectory, its last input frame prepended: (B,)."""
    from neuropde.pde.residual import navier_stokes_residual, residual_norm

    traj = torch.cat([x[:, -1:], pred], dim=1).double()
    return residual_norm(navier_stokes_residual(traj, dt, solver, accuracy=accuracy), L=solver.L, s=-1.0, dt=dt)


def predict_windows(task, dm, split: str, out: Path, options: dict) -> dict:
    """Predict every window ``(x, y)`` of ``split`` with ``task(x, T_out)``: (B, T_in, *space) ->
    (B, T_out, *space); write ``predictions.h5``, ``metrics.json`` and plots; return the metrics.

    On Navier–Stokes data every trajectory also gets the residual-based error estimate; with
    ``options["refine"]["enabled"]`` the task's output operator is fine-tuned per trajectory
    (Spectral-Refiner, :func:`neuropde.models.sfno_refine.refine`).
    """
    from tqdm.auto import tqdm

    from neuropde.callbacks.plots import plot_estimate, plot_fields
    from neuropde.losses import rel_l2, rel_l2_per_frame, sobolev_norm

    data = dm.cfg
    solver = residual_solver(data, task.device)
    opts = dict(options.get("refine") or {"enabled": False})
    refining = bool(opts.pop("enabled", False))
    opts["dtype"] = getattr(torch, str(opts.get("dtype", "float64")))
    if refining and solver is None:
        raise UserError("refine=true needs Navier–Stokes data (the residual is the Navier–Stokes equation's)")
    dt = float(data.get("generator", {}).get("dt_snap", data["spec"].get("dt_snap", 1.0)))  # files: no generator

    cols = {k: [] for k in ("pred", "truth", "last", "refined", "estimate", "estimate_refined")}
    seconds = 0.0
    for x, y in tqdm(dm.predict_dataloader(split), desc=f"predict {split}" + (" + refine" if refining else "")):
        x = x.to(task.device)
        if refining:
            from neuropde.models.sfno_refine import refine

            res = refine(task, x, y.shape[1], solver, dt, **opts)
            pred, est = res.prediction, res.estimate
            cols["refined"].append(res.refined.float().cpu())
            cols["estimate_refined"].append(res.estimate_refined.cpu())
            seconds += res.seconds
        else:
            with torch.no_grad():
                pred = task(x, y.shape[1])
                # 4th-order differences in time need 5 frames: the last input frame and 4 predicted
                est = _estimate(x, pred, solver, dt) if solver is not None and y.shape[1] >= 4 else None
        cols["pred"].append(pred.float().cpu())
        cols["truth"].append(y)
        cols["last"].append(task.last_input_frame(x).cpu() if hasattr(task, "last_input_frame") else x[:, -1:].cpu())
        if est is not None:
            cols["estimate"].append(est.cpu())
    cat = {k: torch.cat(v) for k, v in cols.items() if v}
    pred, truth, last = cat["pred"], cat["truth"], cat["last"]
    res = int(data["resolution"])
    trained = task.meta.get("config", {}).get("data", {}).get("resolution")
    metrics = {f"{split}/rel_l2": float(rel_l2(pred, truth)),
               f"{split}/rel_l2_per_frame": rel_l2_per_frame(pred, truth).tolist(),
               "rel_l2_per_sample": rel_l2(pred, truth, reduce=False).tolist(),
               "resolution": res, "split": split, "samples": int(pred.shape[0]), "ckpt": options.get("ckpt"),
               "trained_resolution": None if trained is None else int(trained)}
    if getattr(task, "persistence", True):  # the repeat-last-frame baseline means something for trajectories only
        metrics[f"{split}/rel_l2_persistence"] = float(rel_l2(last.expand_as(truth), truth))
    if "estimate" in cat:
        from scipy.stats import spearmanr

        L = float(data["spec"].get("L", 1.0))
        error = sobolev_norm((pred - truth).double(), 0.0, L, dt=dt)  # same Bochner scaling as the estimate
        metrics.update({"estimate": cat["estimate"].tolist(), "error": error.tolist(),
                        "estimate_spearman": float(spearmanr(cat["estimate"], error).statistic)})
        plot_estimate(cat["estimate"].numpy(), error.numpy(), out / "plots" / "estimate_vs_error.png",
                      title=f"{split}, {res}²: Spearman {metrics['estimate_spearman']:.2f}")
    if refining:
        refined = cat["refined"]
        metrics.update({f"{split}/rel_l2_refined": float(rel_l2(refined, truth)),
                        f"{split}/rel_l2_per_frame_refined": rel_l2_per_frame(refined, truth).tolist(),
                        "rel_l2_per_sample_refined": rel_l2(refined, truth, reduce=False).tolist(),
                        "estimate_refined": cat["estimate_refined"].tolist(),
                        "seconds_per_refined_sample": seconds / pred.shape[0]})

    arrays = {"predictions": pred, "targets": truth}
    arrays.update({k: cat[k] for k in ("refined", "estimate") if k in cat})
    write_outputs(out, metrics, arrays, {"ckpt": str(metrics["ckpt"]), "split": split, "resolution": res})
    shown = cat["refined"] if refining else pred
    # fields of several channels (B, T, C, *space) get a plot per channel, named after it
    names = (data["spec"].get("channel_names") or [f"c{c}" for c in range(task.channels)]
             if getattr(task, "channel_axis", False) else [None])
    for i in range(min(int(options.get("n_plots", 2)), pred.shape[0])):
        for c, name in enumerate(names):
            pick = (lambda a: a[i]) if name is None else (lambda a: a[i][:, c])
            suffix = "" if name is None else f"_{name}"
            plot_fields(pick(truth).numpy(), pick(shown).numpy(), out / "plots" / f"{split}_{i:03d}{suffix}.png",
                        title=f"{split} sample {i}{suffix.replace('_', ' ')}, rel L2 "
                        f"{float(rel_l2(pick(shown)[None], pick(truth)[None])):.2e}" + (" (refined)" if refining else ""))
    baseline = metrics.get(f"{split}/rel_l2_persistence")
    log.info("%s/rel_l2 %.4g at %d²%s%s; outputs in %s", split, metrics[f"{split}/rel_l2"], res,
             "" if baseline is None else f" (persistence {baseline:.4g})",
             f", refined {metrics[f'{split}/rel_l2_refined']:.4g}" if refining else "", out)
    return metrics
