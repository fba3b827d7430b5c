"""Scheduler factories named by ``conf/scheduler/*.yaml``: ``factory(optimizer, total_steps, **options)``.

Each returns Lightning's scheduler dict (``{"scheduler": ..., "interval": "step" | "epoch"}``).
"""
from __future__ import annotations

import torch


def one_cycle(optimizer: torch.optim.Optimizer, total_steps: int, max_lr: float | None = None,
              div_factor: float = 1e3, final_div_factor: float = 1e4, pct_start: float = 0.3) -> dict:
    """OneCycleLR stepped per batch (the SFNO recipe: div 1e3, final div 1e4); peaks at each group's lr."""
    max_lr = max_lr or [g["lr"] for g in optimizer.param_groups]
    groups = optimizer.param_groups
    # momentum is cycled only when every group has the same kind (a combined Muon + AdamW has both)
    cycle = all("betas" in g for g in groups) or all("momentum" in g for g in groups)
    sched = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=max(total_steps, 1),
                                                div_factor=div_factor, final_div_factor=final_div_factor,
                                                pct_start=pct_start, cycle_momentum=cycle)
    return {"scheduler": sched, "interval": "step"}


def step_lr(optimizer: torch.optim.Optimizer, total_steps: int, step_size: int = 100,
            gamma: float = 0.5) -> dict:
    """StepLR stepped per epoch (the FNO/LSM recipes: halve every 100 epochs)."""
    return {"scheduler": torch.optim.lr_scheduler.StepLR(optimizer, step_size, gamma), "interval": "epoch"}


def cosine(optimizer: torch.optim.Optimizer, total_steps: int, eta_min: float = 0.0) -> dict:
    """Cosine decay to ``eta_min`` over the whole run, stepped per batch."""
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1), eta_min=eta_min)
    return {"scheduler": sched, "interval": "step"}


def linear_decay(optimizer: torch.optim.Optimizer, total_steps: int) -> dict:
    """lr·(1 − step/total): linear decay to zero over the run, stepped per batch (the SDGD recipe)."""
    total = max(int(total_steps), 1)
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1.0 - step / total))
    return {"scheduler": sched, "interval": "step"}


# Schedules planned over the run's length (total_steps): a resumed run cannot be made longer or
# shorter under them, there is no plan past its end (neuropde.resume.resume_config says so).
SPAN_THE_RUN = ("one_cycle", "cosine", "linear_decay")
