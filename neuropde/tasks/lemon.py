"""Training LeMON (arXiv 2408.16168) in Lightning: multi-operator pre-training, fine-tuning (all
weights or LoRA adapters) and PDE-agnostic meta-learning (first-order MAML over operators).

``stage=pretrain`` and ``stage=finetune`` are supervised: batches ``{"u0": (B, n), "target":
(B, T, n), "ctx_u0": (B, E, n), "ctx_target": (B, E, T, n), ...}`` where the context holds other
trajectories of each sample's operator. ``stage=meta`` takes batches of K tasks, one operator
each: ``{"support": {"u0": (K, S, n), "target": (K, S, T, n)}, "query": {...Q...}}``, adapted per
operator on its support set and scored on its query set (:mod:`neuropde.tasks.lemon_meta`).
With ``learn_inner_lr`` the inner learning rate is η = ``inner_lr_max``·sigmoid(θ_η), trained in
the outer loop through the last inner step.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.func import functional_call

from neuropde.errors import UserError
from neuropde.losses import rel_l2, rel_l2_per_frame
from neuropde.nn.lora import TARGETS as LORA_TARGETS, add_lora
from neuropde.tasks.base import BaseTask
from neuropde.tasks.lemon_meta import MetaLearning

__all__ = ["LeMONTask"]

STAGES = ("pretrain", "finetune", "meta")
LOSSES = ("rel_l2", "mse")


class LeMONTask(MetaLearning, BaseTask):
    """Train a :class:`~neuropde.models.lemon.LeMONNet`.

    Parameters
    ----------
    net : LeMONNet.
    optimizer, scheduler, stats : as :class:`~neuropde.tasks.base.BaseTask` (stats of the fields).
    stage : ``pretrain`` | ``finetune`` | ``meta``.
    loss : ``rel_l2`` (default: per-sample relative L2 over all target frames on physical fields,
        the metric itself, so operators of very different amplitude weigh the same) or ``mse``
        (on normalised fields, the reference's choice).
    inner_steps, inner_lr : SGD steps and learning rate of the meta inner loop (reference: 5, 0.005).
    learn_inner_lr : train η = inner_lr_max·sigmoid(θ_η) (initialised at ``inner_lr``) in the outer
        loop (LeMONS-like, one scalar); ``inner_lr_max`` bounds it and is independent of
        ``inner_grad_clip`` (the reference tied the two, pitfall 6).
    inner_grad_clip : element-wise clamp of inner gradients (None or 0: off).
    first_order : FOMAML (default); False backpropagates through every inner step (second order).
    outer_grad_clip : norm clipping of the outer gradient in ``stage=meta`` (manual optimisation
        cannot use ``trainer.gradient_clip_val``); None: off. The reference clips at 1.0.
    lora_rank, lora_alpha, lora_skip, lora_targets : ``stage=finetune`` only: rank > 0 wraps every
        layer of the kinds in ``lora_targets`` (``linear``: nn.Linear, the default; ``conv1x1``: 1×1
        convolutions; ``spectral``: the FNO's spectral weights, per mode) of the net, names
        containing a ``lora_skip`` entry excepted, in a LoRA adapter W = W₀ + α·B A
        (:mod:`neuropde.nn.lora`) and freezes all other weights; 0 fine-tunes every weight.
    input_noise : additive Gaussian noise on the network inputs during training, relative to each
        field's RMS (reference: 0.02; 0 for clean comparisons, pitfall 9).
    fewshot_steps, fewshot_lr : adaptation at evaluation on meta-format batches (support -> query):
        SGD steps (reference: 20) and lr (None: the inner lr, learned or not). 0: zero-shot only.
    """

    @classmethod
    def make_datamodule(cls, cfg, root, progress: bool = True):
        """The data config's module; in ``stage=meta`` its batches are tasks of one operator each
        (``model.meta_tasks``)."""
        dm = super().make_datamodule(cfg, root, progress=progress)
        if cfg.model.task.get("stage") == "meta" and cfg.model.get("meta_tasks"):
            from omegaconf import OmegaConf

            dm.cfg["loader"]["tasks"] = OmegaConf.to_container(cfg.model.meta_tasks, resolve=True)
        return dm

    def __init__(self, net: nn.Module, optimizer: dict, scheduler: dict | None = None, stats: dict | None = None,
                 stage: str = "pretrain", loss: str = "rel_l2", inner_steps: int = 5, inner_lr: float = 0.005,
                 learn_inner_lr: bool = False, inner_lr_max: float = 0.05, inner_grad_clip: float | None = 1.0,
                 first_order: bool = True, outer_grad_clip: float | None = None, lora_rank: int = 0,
                 lora_alpha: float = 1.0, lora_skip: tuple[str, ...] | list[str] = (),
                 lora_targets: tuple[str, ...] | list[str] = ("linear",), input_noise: float = 0.0,
                 fewshot_steps: int = 20, fewshot_lr: float | None = None):
        super().__init__(optimizer, scheduler, stats)
        if stage not in STAGES:
            raise UserError(f"model.task.stage={stage}: choose one of {', '.join(STAGES)}")
        if loss not in LOSSES:
            raise UserError(f"model.task.loss={loss}: choose one of {', '.join(LOSSES)}")
        if int(lora_rank) < 0 or (int(lora_rank) > 0 and stage != "finetune"):
            raise UserError(f"model.task.lora_rank={lora_rank}: LoRA adapts a pre-trained model, so it needs "
                            "stage=finetune and a rank >= 1 (0 turns it off)")
        lora_targets = tuple(lora_targets)
        if not lora_targets or not set(lora_targets) <= set(LORA_TARGETS):
            raise UserError(f"model.task.lora_targets={list(lora_targets)}: choose among {', '.join(LORA_TARGETS)}")
        if int(inner_steps) < 0 or int(fewshot_steps) < 0:
            raise UserError("model.task.inner_steps and fewshot_steps must be >= 0")
        if not float(inner_lr) > 0:
            raise UserError(f"model.task.inner_lr={inner_lr} must be positive")
        if learn_inner_lr and stage == "meta" and not 0 < float(inner_lr) < float(inner_lr_max):
            raise UserError(f"model.task.learn_inner_lr: the initial inner_lr={inner_lr} must lie strictly "
                            f"between 0 and inner_lr_max={inner_lr_max}")
        self.net, self.stage, self.loss_name = net, stage, loss
        self.inner_steps, self.inner_lr = int(inner_steps), float(inner_lr)
        # η is learned in the meta stage only (the other stages have no inner loop to train it in)
        self.learn_inner_lr = bool(learn_inner_lr) and stage == "meta"
        self.inner_lr_max = float(inner_lr_max)
        self.inner_grad_clip = float(inner_grad_clip) if inner_grad_clip else None
        self.first_order = bool(first_order)
        self.outer_grad_clip = float(outer_grad_clip) if outer_grad_clip else None
        self.lora_rank, self.lora_alpha, self.lora_skip = int(lora_rank), float(lora_alpha), tuple(lora_skip)
        self.lora_targets = lora_targets
        self.lora_applied = False
        self.input_noise = float(input_noise)
        self.fewshot_steps = int(fewshot_steps)
        self.fewshot_lr = float(fewshot_lr) if fewshot_lr else None
        if self.learn_inner_lr:
            p = self.inner_lr / self.inner_lr_max
            self.inner_lr_logit = nn.Parameter(torch.tensor(math.log(p / (1 - p))))
        else:
            self.inner_lr_logit = None
        # meta-learning steps the optimizer itself: one outer step per batch of K tasks
        self.automatic_optimization = stage != "meta"

    # --------------------------------------------------------------------------------- LoRA
    def apply_lora(self) -> list[str]:
        """Wrap the net's layers of the kinds in ``lora_targets`` in LoRA adapters (base frozen); idempotent.

        Done when the model is configured for fitting (:meth:`configure_model`), not in the
        constructor, so that ``init_from=`` a pre-trained checkpoint (plain nn.Linear names) loads
        every weight first; loading a checkpoint that holds adapters wraps the net beforehand.
        """
        if self.lora_applied or self.lora_rank == 0:
            return []
        try:
            names = add_lora(self.net, self.lora_rank, self.lora_alpha, self.lora_skip, self.lora_targets)
        except ValueError as err:
            raise UserError(f"model.task.lora_rank={self.lora_rank}: {err} (the fno backbone without context "
                            "has no nn.Linear: add conv1x1 and spectral to model.task.lora_targets, or use "
                            "lora_rank=0)") from None
        self.lora_applied = True
        return names

    def configure_model(self) -> None:
        if self.stage == "finetune":
            self.apply_lora()

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # adapters of every kind end in lora_A (LoRALinear, LoRAConv1x1, LoRASpectralWeight)
        if self.lora_rank and any(k.endswith(".lora_A") for k in state_dict):
            self.apply_lora()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # ------------------------------------------------------------------------------ forward
    def current_inner_lr(self) -> Tensor | float:
        """η: the learned one (a tensor in the graph) or the fixed ``inner_lr``."""
        if self.inner_lr_logit is None:
            return self.inner_lr
        return self.inner_lr_max * torch.sigmoid(self.inner_lr_logit)

    def _net(self, params: dict | None, u0: Tensor, ctx_u0: Tensor | None, ctx_target: Tensor | None) -> Tensor:
        """Physical fields in, NORMALISED prediction out (B, T, n); ``params`` replaces the net's
        trainable weights (fast weights) when given."""
        args = (self.normalize(u0),
                None if ctx_u0 is None else self.normalize(ctx_u0),
                None if ctx_target is None else self.normalize(ctx_target))
        return self.net(*args) if params is None else functional_call(self.net, params, args)

    def forward(self, u0: Tensor, ctx_u0: Tensor | None = None, ctx_target: Tensor | None = None) -> Tensor:
        """Physical prediction (B, T, n) of u0 (B, n) given context (B, E, n), (B, E, T, n)."""
        return self.denormalize(self._net(None, u0, ctx_u0, ctx_target))

    def _loss(self, out: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """(training loss, relative L2) of the normalised output ``out`` against physical ``target``."""
        if out.shape != target.shape:
            raise UserError(f"LeMON predicts {tuple(out.shape[1:])} frames × points per sample but the data "
                            f"gives {tuple(target.shape[1:])}: set model.net.t_out and n from the data")
        err = rel_l2(self.denormalize(out), target)
        if self.loss_name == "rel_l2":
            return err, err
        return torch.mean((out - (target - self.out_mean) / self.out_std) ** 2), err

    def _noisy(self, u: Tensor | None) -> Tensor | None:
        if u is None or not self.input_noise:
            return u
        rms = u.pow(2).mean(dim=-1, keepdim=True).sqrt()
        return u + self.input_noise * rms * torch.randn_like(u)

    def _context(self, batch: dict) -> tuple[Tensor | None, Tensor | None]:
        if not getattr(self.net, "use_context", False):
            return None, None
        if "ctx_u0" not in batch or "ctx_target" not in batch:
            raise UserError("this LeMON net reads the operator from context (use_context=true) but the batch "
                            "has no ctx_u0 / ctx_target: give data.context > 0 or set model.net.use_context=false")
        return batch["ctx_u0"], batch["ctx_target"]

    # ------------------------------------------------------------------- supervised stages
    def training_step(self, batch, batch_idx):
        if self.stage == "meta":
            return self._meta_training_step(batch)
        ctx_u0, ctx_target = self._context(batch)
        out = self._net(None, self._noisy(batch["u0"]), self._noisy(ctx_u0), self._noisy(ctx_target))
        loss, err = self._loss(out, batch["target"])
        self.check_finite(loss)
        n = batch["u0"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log("train/rel_l2", err, batch_size=n)
        return loss

    # -------------------------------------------------------------------------- meta stage
    def _meta_training_step(self, batch: dict) -> Tensor:
        opt = self.optimizers()
        opt.zero_grad()
        totals = self.meta_gradients(batch)
        if self.outer_grad_clip:
            self.clip_gradients(opt, gradient_clip_val=self.outer_grad_clip, gradient_clip_algorithm="norm")
        opt.step()
        self._step_schedulers("step")
        K = batch["support"]["u0"].shape[0]
        self.log("train/loss", totals["loss"], prog_bar=True, batch_size=K)
        self.log("train/rel_l2", totals["rel_l2"], batch_size=K)
        self.log("train/support_loss", totals["support_loss"], batch_size=K)
        self.log("train/inner_lr", float(self.current_inner_lr().detach() if self.learn_inner_lr
                                         else self.inner_lr), batch_size=K)
        return torch.tensor(totals["loss"])

    def _step_schedulers(self, interval: str) -> None:
        if self._trainer is None:
            return
        for cfg in self.trainer.lr_scheduler_configs:
            if cfg.interval == interval:
                cfg.scheduler.step()

    def on_train_epoch_end(self) -> None:
        if self.stage == "meta":
            self._step_schedulers("epoch")

    # ------------------------------------------------------------------------------ evaluation
    def _evaluate(self, batch: dict, stage: str, batch_idx: int) -> Tensor:
        if "support" in batch:
            return self._evaluate_tasks(batch, stage, batch_idx)
        ctx_u0, ctx_target = self._context(batch)
        u0, target = batch["u0"], batch["target"]
        pred = self(u0, ctx_u0, ctx_target)
        n = u0.shape[0]
        self.log(f"{stage}/rel_l2", rel_l2(pred, target), prog_bar=True, batch_size=n, sync_dist=True)
        self.log(f"{stage}/rel_l2_persistence", rel_l2(u0[:, None].expand_as(target), target), batch_size=n,
                 sync_dist=True)
        if stage == "test":
            for t, e in enumerate(rel_l2_per_frame(pred, target)):
                self.log(f"test/rel_l2_frame{t + 1:02d}", e, batch_size=n, sync_dist=True)
        if stage == "val" and batch_idx == 0:
            self.example = (target[:1].detach().cpu(), pred[:1].detach().cpu())
        return pred

    def _evaluate_tasks(self, batch: dict, stage: str, batch_idx: int) -> Tensor:
        """Meta-format batch: per task, zero-shot (context = support) and after ``fewshot_steps``
        steps on the support; both errors on the query, averaged over all query samples."""
        sup, qry = batch["support"], batch["query"]
        K, Q = qry["u0"].shape[:2]
        zero, adapted, preds = [], [], []
        for k in range(K):
            s = {"u0": sup["u0"][k], "target": sup["target"][k]}
            with torch.no_grad():
                p0 = self.predict_adapted(None, qry["u0"][k], s)
            zero.append(rel_l2(p0, qry["target"][k], reduce=False))
            if self.fewshot_steps > 0:
                fast = self.adapt(s)
                with torch.no_grad():
                    p1 = self.predict_adapted(fast, qry["u0"][k], s)
            else:
                p1 = p0
            adapted.append(rel_l2(p1, qry["target"][k], reduce=False))
            preds.append(p1)
        n = K * Q
        self.log(f"{stage}/rel_l2", torch.cat(adapted).mean(), prog_bar=True, batch_size=n, sync_dist=True)
        self.log(f"{stage}/rel_l2_zeroshot", torch.cat(zero).mean(), batch_size=n, sync_dist=True)
        pred = torch.stack(preds)
        if stage == "val" and batch_idx == 0:
            self.example = (qry["target"][0, :1].detach().cpu(), pred[0, :1].detach().cpu())
        return pred

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val", batch_idx)

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test", batch_idx)

    def predict_step(self, batch, batch_idx):
        if "support" in batch:  # (K, Q, T, n): each task's query after few-shot adaptation on its support
            preds = []
            for k in range(batch["query"]["u0"].shape[0]):
                s = {"u0": batch["support"]["u0"][k], "target": batch["support"]["target"][k]}
                fast = self.adapt(s) if self.fewshot_steps > 0 else None
                preds.append(self.predict_adapted(fast, batch["query"]["u0"][k], s))
            return torch.stack(preds)
        ctx_u0, ctx_target = self._context(batch)
        return self(batch["u0"], ctx_u0, ctx_target)

    def predict_split(self, datamodule, split: str, out, options: dict) -> dict:
        """Every sample from its initial field and same-operator examples (:func:`predict_lemon`)."""
        return predict_lemon(self, datamodule, split, out, options)


def predict_lemon(task: LeMONTask, dm, split: str, out, options: dict) -> dict:
    """``predict.py`` for LeMON checkpoints: every served sample of ``split`` predicted from its
    initial field and its same-operator examples; errors per sample, per family and per frame,
    ``predictions.h5`` and space-time plots."""
    from tqdm.auto import tqdm

    from neuropde.callbacks.plots import plot_error_curves, plot_spacetime
    from neuropde.data.multi1d import FAMILY_NAMES
    from neuropde.tasks.prediction import write_outputs

    preds, truths, families = [], [], []
    with torch.no_grad():
        for batch in tqdm(dm.predict_dataloader(split), desc=f"predict {split}"):
            batch = {k: v.to(task.device) for k, v in batch.items()}
            preds.append(task.predict_step(batch, 0).cpu())
            truths.append(torch.cat([batch["u0"][:, None], batch["target"]], 1).cpu())  # (B, 1 + T, n)
            families.append(batch["family"].cpu())
    pred, truth, family = torch.cat(preds), torch.cat(truths), torch.cat(families)
    per_sample = rel_l2(pred, truth[:, 1:], reduce=False)
    per_frame = rel_l2_per_frame(pred, truth[:, 1:])
    by_family = {FAMILY_NAMES[int(f)]: float(per_sample[family == f].mean()) for f in family.unique()}
    metrics = {f"{split}/rel_l2": float(per_sample.mean()), f"{split}/rel_l2_by_family": by_family,
               f"{split}/rel_l2_per_frame": per_frame.tolist(), "split": split, "ckpt": options.get("ckpt"),
               "samples": len(pred)}
    write_outputs(out, metrics, {"predictions": pred, "targets": truth[:, 1:], "family": family},
                  {"families": ",".join(FAMILY_NAMES)})
    for f in family.unique()[:int(options.get("n_plots", 2))]:  # one sample of each family
        i = int((family == f).nonzero()[0])
        plot_spacetime({"truth": truth[i].numpy(), "LeMON": torch.cat([truth[i, :1], pred[i]]).numpy()},
                       out / "plots" / f"{split}_{FAMILY_NAMES[int(f)]}.png",
                       title=f"{split}: {FAMILY_NAMES[int(f)]}, relative L2 {float(per_sample[i]):.3f}")
    plot_error_curves({"relative L2": per_frame.numpy()}, out / "plots" / f"{split}_error_per_frame.png",
                      title=f"{split}: mean over samples")
    return metrics
