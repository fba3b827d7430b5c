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


def lbfgs(module: nn.Module, lr: float = 1.0, max_iter: int = 20, history_size: int = 50,
          tolerance_grad: float = 1e-9, tolerance_change: float = 1e-12,
          line_search_fn: str | None = "strong_wolfe") -> torch.optim.Optimizer:
    """torch's L-BFGS over every parameter, never wrapped in a combined optimizer: it calls the
    closure several times per step (line search), which Lightning supports for this optimizer.
    Complex spectral weights are optimised as pairs of reals (torch views them with view_as_real)."""
    params = [p for p in module.parameters() if p.requires_grad]
    return torch.optim.LBFGS(params, lr=lr, max_iter=max_iter, history_size=history_size,
                             tolerance_grad=tolerance_grad, tolerance_change=tolerance_change,
                             line_search_fn=line_search_fn)


def adamw_fallback(params: list, options: dict | None, lr: float) -> torch.optim.AdamW:
    """AdamW for the parameters a combined optimizer's main rule does not take.

    ``options`` is the config's ``adamw:`` block; its lr defaults to the main ``lr`` (so one
    ``optimizer.lr=`` moves both) and its weight decay to 0.
    """
    aux = {"weight_decay": 0.0, **(options or {})}
    aux["lr"] = aux.get("lr") or lr
    aux["betas"] = tuple(aux.get("betas", (0.9, 0.999)))
    return torch.optim.AdamW(params, **aux)
