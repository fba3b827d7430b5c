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
        # buffers: saved in every checkpoint, moved with the module, never trained. A statistic is
        # a scalar, or per channel a nested list shaped (C, 1, ..., 1) that broadcasts over
        # (B, T, C, *space) fields (several fields of a user's file, neuropde.data.files)
        self.register_buffer("norm_mean", _stat(stats["mean"]))
        self.register_buffer("norm_std", _stat(stats["std"]).clamp_min(1e-12))
        # outputs: the same statistics for trajectories, their own for input -> output pairs
        self.register_buffer("out_mean", _stat(stats.get("out_mean", stats["mean"])))
        self.register_buffer("out_std", _stat(stats.get("out_std", stats["std"])).clamp_min(1e-12))
        self.meta: dict = {}  # resolved config, choices, version: filled by neuropde.run

    @classmethod
    def make_datamodule(cls, cfg, root, progress: bool = True):
        """The data module this task trains and predicts on, from the whole config (``cfg.data``,
        ``cfg.seed``; a task may read its own ``cfg.model``): by default the class that the data
        config names in ``data._target_``, built as ``(data_cfg, root, progress=, seed=)``. A task
        that needs its data served another way overrides this."""
        from omegaconf import OmegaConf

        from neuropde.plugins import import_target

        data = OmegaConf.to_container(cfg.data, resolve=True)
        target = data.get("_target_")
        if not target:
            raise UserError(f"data {data.get('name')} names no data module: set data._target_ (e.g. "
                            "neuropde.data.datamodule.TrajectoryDataModule, as conf/data/ns2d.yaml does)")
        module_class = import_target(target, "data._target_", "the data modules shipped are named in conf/data/*.yaml")
        return module_class(data, root, progress=progress, seed=int(cfg.get("seed", 0)))

    def save_pretrained(self, directory, metrics: dict | None = None):
        """Write this trained model as a folder without pickles (config.yaml, model.safetensors,
        neuropde.json, README.md) that :func:`neuropde.load` and ``predict.py ckpt=`` take."""
        from neuropde.pretrained import save_pretrained

        return save_pretrained(self, directory, metrics)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, **kwargs):
        """Lightning's entry point, answered by :func:`neuropde.load` (a neuropde task is rebuilt from
        the config its checkpoint carries; Lightning's own version would need every constructor
        argument, the network included)."""
        from neuropde.pretrained import load

        if kwargs:
            raise UserError(f"{cls.__name__}.load_from_checkpoint takes no overrides ({', '.join(kwargs)}): "
                            "the checkpoint's config rebuilds the model; edit it with init_from= in train.py")
        task = load(checkpoint_path, device=map_location)
        if not isinstance(task, cls):
            raise UserError(f"{checkpoint_path} holds a {type(task).__name__}, not a {cls.__name__}: "
                            "load it with neuropde.load")
        return task

    def predict_split(self, datamodule, split: str, out, options: dict) -> dict:
        """``predict.py``: predict ``split`` of ``datamodule``, write ``predictions.h5``,
        ``metrics.json`` and plots into ``out``, return the metrics.

        ``options`` are the predict config's settings as a dict (``ckpt``, ``n_plots``, ``refine``,
        ``assimilate``, …); the training config is ``self.meta["config"]``. This base version
        predicts trajectory windows (:func:`neuropde.tasks.prediction.predict_windows`); a task that
        predicts its own way overrides it.
        """
        from neuropde.tasks.prediction import predict_windows

        if (options.get("assimilate") or {}).get("enabled"):
            family = self.meta.get("config", {}).get("model", {}).get("family", type(self).__name__)
            raise UserError(f"assimilate=true: model={family} does not assimilate measurements (its task "
                            f"{type(self).__name__} has no assimilation); leave assimilate out")
        return predict_windows(self, datamodule, split, out, options)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.norm_mean) / self.norm_std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Network output -> physical output field."""
        return x * self.out_std + self.out_mean

    def configure_optimizers(self):
        opt, sched = self.optimizer_and_scheduler()
        return opt if sched is None else {"optimizer": opt, "lr_scheduler": sched}

    def optimizer_and_scheduler(self):
        """The configured optimizer and its scheduler (None for a constant learning rate): the one
        place both configs are instantiated. A task that adds optimizers of its own (EquiNO's
        L-BFGS stage) builds on this in its ``configure_optimizers``."""
        from neuropde.optim import build_optimizer

        opt = build_optimizer(self.optimizer_cfg, self, self.optimizer_batch_size())
        if not self.scheduler_cfg.get("_target_"):
            return opt, None
        sched = instantiate(self.scheduler_cfg, optimizer=opt, total_steps=self.scheduled_steps(), _convert_="all")
        return opt, sched

    def optimizer_batch_size(self) -> int | None:
        """Samples per optimizer step, for ``optimizer.batch_scaling``: by default the effective batch."""
        return effective_batch_size(self._trainer)

    def scheduled_steps(self) -> int:
        """The steps the scheduler spans (its ``total_steps``): by default every optimizer step of the run."""
        return int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1

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
        # checkpoints written before outputs had their own statistics used the input ones
        for out, inp in (("out_mean", "norm_mean"), ("out_std", "norm_std")):
            if out not in state_dict and inp in state_dict:
                state_dict[out] = state_dict[inp]
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def state_dict(self, *args, **kwargs):
        sd = super().state_dict(*args, **kwargs)
        for key in [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]:
            del sd[key]
        return sd



def effective_batch_size(trainer) -> int | None:
    """Samples per optimizer step: devices × gradient accumulation × loader batch size."""
    if trainer is None or getattr(trainer, "datamodule", None) is None:
        return None
    batch = trainer.datamodule.cfg.get("loader", {}).get("batch_size")
    if batch is None:
        return None
    return int(batch) * int(trainer.world_size) * int(trainer.accumulate_grad_batches)


def _stat(value) -> torch.Tensor:
    """A normaliser statistic as a float32 tensor: a scalar, or a per-channel nested list."""
    return torch.as_tensor(value, dtype=torch.float32).clone()
