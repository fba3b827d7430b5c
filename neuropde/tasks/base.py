"""What every neuropde task shares: optimizer and scheduler from config, normaliser buffers,
a NaN guard, and a checkpoint that holds only primitives and tensors."""
from __future__ import annotations

import lightning as L
import torch
from hydra.utils import instantiate

from neuropde.errors import UserError


class TrainingDiverged(UserError):
    """Raised when the loss stops being finite; the last good checkpoint stays untouched."""


class BaseTask(L.LightningModule):
    """Base LightningModule.

    Parameters
    ----------
    optimizer : config dict with ``_target_`` naming a factory ``(module, **options) -> Optimizer``.
    scheduler : config dict with ``_target_`` naming a factory ``(optimizer, total_steps, **options)``,
        or None / empty for a constant learning rate.
    stats : ``{"mean": float, "std": float}`` of the training split (normaliser).
    """

    def __init__(self, optimizer: dict, scheduler: dict | None = None, stats: dict | None = None):
        super().__init__()
        self.optimizer_cfg = dict(optimizer)
        self.scheduler_cfg = dict(scheduler or {})
        stats = stats or {"mean": 0.0, "std": 1.0}
        # buffers: saved in every checkpoint, moved with the module, never trained
        self.register_buffer("norm_mean", torch.tensor(float(stats["mean"])))
        self.register_buffer("norm_std", torch.tensor(max(float(stats["std"]), 1e-12)))
        self.meta: dict = {}  # resolved config, choices, version: filled by neuropde.run

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.norm_mean) / self.norm_std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.norm_std + self.norm_mean

    def configure_optimizers(self):
        opt = instantiate(self.optimizer_cfg, module=self, _convert_="all")
        if not self.scheduler_cfg.get("_target_"):
            return opt
        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        sched = instantiate(self.scheduler_cfg, optimizer=opt, total_steps=total, _convert_="all")
        return {"optimizer": opt, "lr_scheduler": sched}

    def check_finite(self, loss: torch.Tensor) -> None:
        """Stop before a non-finite loss reaches the weights (and the checkpoints)."""
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"training diverged: loss is {loss.item()} at epoch {self.current_epoch}, step {self.global_step}. "
                "The last good checkpoint is kept; lower optimizer.lr or set trainer.gradient_clip_val.")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Only tensors in the state dict: some libraries (neuraloperator) add a `_metadata` dict
        # holding Python callables, which would make torch.load(weights_only=True) fail.
        sd = checkpoint["state_dict"]
        for key in [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]:
            del sd[key]
        checkpoint["neuropde"] = self.meta

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        state_dict = {k: v for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def state_dict(self, *args, **kwargs):
        sd = super().state_dict(*args, **kwargs)
        for key in [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]:
            del sd[key]
        return sd

