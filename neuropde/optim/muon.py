"""Muon for the parameters ``torch.optim.Muon`` refuses, and the ``optimizer=muon`` factory.

``torch.optim.Muon`` takes real 2-D matrices only. Neural operators also have convolution kernels
(out, in, *k) — treated here as (out, in·k) matrices — and complex Fourier weights
(C_in, C_out, *modes) — one complex C_in×C_out matrix per mode, orthogonalised together by the
batched complex Newton–Schulz iteration. The update is Muon's (reference notes, optimizers.md
2.1): EMA momentum with Nesterov, approximate polar factor, shape-dependent scale, decoupled
weight decay with the unscaled learning rate.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.optim import Optimizer

from neuropde.optim.combined import CombinedOptimizer
from neuropde.optim.grouping import route_parameters
from neuropde.optim.newton_schulz import newton_schulz, orthogonalize_spectral_weight, scale_factor


class MatrixMuon(Optimizer):
    """Muon on conv kernels (as matrices) and complex spectral weights (per mode).

    Parameters
    ----------
    params : real tensors with ndim ≥ 2 or complex tensors (C_in, C_out, *modes).
    lr, weight_decay, momentum, nesterov, ns_steps : as torch.optim.Muon.
    adjust_lr_fn : "original" (√max(1, m/n)) or "match_rms_adamw" (0.2·√max(m, n)).
    """

    def __init__(self, params, lr: float = 1e-3, weight_decay: float = 0.1, momentum: float = 0.95,
                 nesterov: bool = True, ns_steps: int = 5, adjust_lr_fn: str = "match_rms_adamw"):
        if adjust_lr_fn not in ("original", "match_rms_adamw"):
            raise ValueError(f"adjust_lr_fn must be 'original' or 'match_rms_adamw', got {adjust_lr_fn!r}")
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                        ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - group["momentum"])
                update = p.grad.lerp(buf, group["momentum"]) if group["nesterov"] else buf
                if p.is_complex():
                    # per-mode map x̂_out = Σ_i x̂_i W[i, o]: fan-in C_in, fan-out C_out
                    ortho = orthogonalize_spectral_weight(update, steps=group["ns_steps"])
                    rows, cols = p.shape[1], p.shape[0]
                else:
                    ortho = newton_schulz(update.reshape(p.shape[0], -1), steps=group["ns_steps"]).view_as(p)
                    rows, cols = p.shape[0], p[0].numel()
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(ortho, alpha=-group["lr"] * scale_factor(rows, cols, group["adjust_lr_fn"]))
        return loss


def muon(module: nn.Module, lr: float = 1e-3, weight_decay: float = 0.1, momentum: float = 0.95,
         nesterov: bool = True, ns_steps: int = 5, adjust_lr_fn: str = "match_rms_adamw",
         adamw: dict | None = None) -> Optimizer:
    """``optimizer=muon``: Muon on hidden matrices and spectral weights, AdamW on the rest.

    Real 2-D hidden weights use ``torch.optim.Muon``; conv kernels and complex spectral weights
    use :class:`MatrixMuon`; the rest (see :mod:`neuropde.optim.grouping`) uses AdamW with the
    options in ``adamw``. Returns a :class:`CombinedOptimizer` (one ``step``, one closure call).
    """
    routes = route_parameters(module)
    plain = [p for _, p in routes["matrix"] if p.dim() == 2]
    shaped = [p for _, p in routes["matrix"] if p.dim() > 2] + [p for _, p in routes["spectral"]]
    muon_opts = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps)
    members = {}
    if plain:
        members["muon"] = torch.optim.Muon(plain, adjust_lr_fn=adjust_lr_fn, **muon_opts)
    if shaped:
        members["muon_matrix"] = MatrixMuon(shaped, adjust_lr_fn=adjust_lr_fn, **muon_opts)
    rest = [p for _, p in routes["adamw"]]
    if rest:
        opts = {"lr": lr, "weight_decay": 0.0, **(adamw or {})}
        opts["betas"] = tuple(opts.get("betas", (0.9, 0.999)))
        members["adamw"] = torch.optim.AdamW(rest, **opts)
    return CombinedOptimizer(members)
