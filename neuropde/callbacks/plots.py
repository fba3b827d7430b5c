"""PNG plots of truth / prediction / error, at validation end and from predict.py."""
from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on clusters and CI
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path, dpi: int) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    _pyplot().close(fig)
    return path


def plot_fields(truth: np.ndarray, pred: np.ndarray, path: str | Path, frames=None, title: str = "") -> Path:
    """Save a grid of truth / prediction / |error| images: one row per shown frame.

    truth, pred : arrays (T, X, Y); ``frames`` : frame indices to show (default first, middle, last;
    a single output, T = 1, is one row without frame numbers).
    1-D fields (T, X) are shown as space-time images instead (see :func:`plot_spacetime`).
    """
    plt = _pyplot()
    truth, pred = np.asarray(truth, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    if truth.ndim == 2:
        return plot_spacetime({"truth": truth, "prediction": pred}, path, title=title)
    T = truth.shape[0]
    frames = frames if frames is not None else sorted({0, T // 2, T - 1})
    fig, axes = plt.subplots(len(frames), 3, figsize=(9.6, 3.0 * len(frames) + (0.4 if title else 0)),
                             squeeze=False)
    vmin, vmax = truth[frames].min(), truth[frames].max()
    err = np.abs(pred - truth)
    for i, t in enumerate(frames):
        rel = np.linalg.norm(pred[t] - truth[t]) / max(np.linalg.norm(truth[t]), 1e-12)
        frame = f", frame {t + 1}" if T > 1 else ""
        for j, (img, name, kw) in enumerate([
            (truth[t], f"truth{frame}", dict(vmin=vmin, vmax=vmax, cmap="RdBu_r")),
            (pred[t], "prediction", dict(vmin=vmin, vmax=vmax, cmap="RdBu_r")),
            (err[t], f"|error| (rel L2 {rel:.2e})", dict(cmap="magma")),
        ]):
            ax = axes[i, j]
            im = ax.imshow(img.T, origin="lower", **kw)
            ax.set_title(name, fontsize=9)
            ax.set_xticks([]), ax.set_yticks([])
            fig.colorbar(im, ax=ax, fraction=0.046)
    if title:
        fig.suptitle(title)
    return _save(fig, path, dpi=80)


def plot_spacetime(fields: dict, path: str | Path, title: str = "", truth_key: str = "truth") -> Path:
    """Space-time images (x across, t up) of 1-D trajectories side by side, plus |error| of each
    against ``fields[truth_key]``. fields : name -> array (T, X)."""
    plt = _pyplot()
    fields = {k: np.asarray(v, dtype=np.float64) for k, v in fields.items()}
    truth = fields[truth_key]
    others = [k for k in fields if k != truth_key]
    panels = [(truth_key, truth, "RdBu_r")] + [(k, fields[k], "RdBu_r") for k in others] + [
        (f"|{k} − {truth_key}|", np.abs(fields[k] - truth), "magma") for k in others]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), squeeze=False)
    vmin, vmax = truth.min(), truth.max()
    for ax, (name, img, cmap) in zip(axes[0], panels):
        kw = dict(vmin=vmin, vmax=vmax) if cmap == "RdBu_r" else {}
        im = ax.imshow(img, origin="lower", aspect="auto", cmap=cmap, **kw)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("x (grid point)")
        ax.set_ylabel("step")
        fig.colorbar(im, ax=ax, fraction=0.046)
    if title:
        fig.suptitle(title)
    return _save(fig, path, dpi=80)


def plot_error_curves(curves: dict, path: str | Path, title: str = "", ylabel: str = "relative L2") -> Path:
    """Error against step, one line per name: curves : name -> array (steps,)."""
    fig, ax = _pyplot().subplots(figsize=(5.5, 3.8))
    for name, values in curves.items():
        ax.semilogy(np.arange(1, len(values) + 1), np.asarray(values), label=name)
    ax.set_xlabel("step after the warm-up")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, path, dpi=100)


def plot_estimate(estimate: np.ndarray, error: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Scatter of the residual-based error estimate against the true error, one point per trajectory."""
    fig, ax = _pyplot().subplots(figsize=(4.5, 4))
    ax.loglog(error, estimate, "o", ms=4, alpha=0.7)
    ax.set_xlabel("true error  ‖ω − ω_θ‖ (L²(0,T;L²))")
    ax.set_ylabel("estimate  ‖R(ω_θ)‖ (L²(0,T;H⁻¹))")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path, dpi=90)


class ValidationPlots(L.Callback):
    """Plot the first validation sample at the end of every ``every_n_epochs``-th validation: a PNG
    in ``dirpath``, also sent to the run's logger when it shows images (:func:`log_image`)."""

    def __init__(self, dirpath: str | Path, every_n_epochs: int = 1):
        self.dirpath, self.every = Path(dirpath), max(int(every_n_epochs), 1)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        example = getattr(pl_module, "example", None)
        if example is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        if trainer.current_epoch % self.every and not trainer.is_last_batch:
            return
        truth, pred = example
        if truth.dim() not in (3, 4):  # (1, T, X) or (1, T, X, Y) fields only
            return
        path = plot_fields(truth[0].numpy(), pred[0].float().numpy(),
                           self.dirpath / f"val_epoch{trainer.current_epoch:03d}.png",
                           title=f"validation, epoch {trainer.current_epoch}")
        log_image(trainer, "val/plot", path)


def log_image(trainer: L.Trainer, tag: str, path: str | Path) -> None:
    """Send a saved PNG to each of the trainer's loggers that shows images, at the current step:
    TensorBoard (``add_image`` of its SummaryWriter) and W&B (``log_image``); others get nothing."""
    from lightning.pytorch.loggers import TensorBoardLogger

    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            image = _pyplot().imread(path)  # (H, W, 4) RGBA floats in [0, 1]
            logger.experiment.add_image(tag, image, trainer.global_step, dataformats="HWC")
        elif callable(getattr(logger, "log_image", None)):  # WandbLogger
            logger.log_image(key=tag, images=[str(path)], step=trainer.global_step)
