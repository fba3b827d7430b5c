"""Optimizer factories named by ``conf/optimizer/*.yaml`` (``_target_``), called as ``factory(module, **options)``."""
from __future__ import annotations

import torch
from torch import nn


def adamw(module: nn.Module, lr: float = 1e-3, weight_decay: float = 1e-4,
          betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> torch.optim.Optimizer:
    """torch's AdamW over every trainable parameter (complex spectral weights included)."""
    params = [p for p in module.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas), eps=eps)


def adam(module: nn.Module, lr: float = 1e-3, weight_decay: float = 0.0,
         betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> torch.optim.Optimizer:
    """torch's Adam (coupled L2 weight decay), as several reference recipes use."""
    params = [p for p in module.parameters() if p.requires_grad]
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas), eps=eps)
