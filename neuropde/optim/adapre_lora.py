"""AdaPreLoRA: a preconditioned, balanced update of LoRA factors (``optimizer=adapre_lora``).

Reference notes, optimizers.md 2.10. For W = W₀ + α·B A the optimizer wants ΔW ≈ D, the
Adafactor-preconditioned gradient D = G / √V̂ with V̂ = r cᵀ / mean(r) built from EMAs of the row
and column means of G² (G = ∂L/∂W, accumulated by :class:`~neuropde.nn.lora.LoRALinear`).
With P = diag(p), Q = diag(q), p_i q_j = V̂_ij^{1/4}, the H-norm is ‖X‖_H = ‖P X Q‖_F and in the
coordinates B̃ = P(αB), Ã = A Q, D̃ = P⁻¹ G Q⁻¹ the factor updates minimising
‖ΔB̃ Ã + B̃ ΔÃ − D̃‖_F, with the overlap P_B D̃ P_A split equally between the two, are

    ΔB̃ = (D̃Ãᵀ − ½ B̃ (B̃ᵀB̃)⁻¹ B̃ᵀD̃Ãᵀ)(ÃÃᵀ)⁻¹,   ΔÃ = (B̃ᵀB̃)⁻¹ (B̃ᵀD̃ − ½ B̃ᵀD̃Ãᵀ (ÃÃᵀ)⁻¹ Ã).

Only D̃Ãᵀ = P⁻¹∇_B L/α and B̃ᵀD̃ = ∇_A L Q⁻¹ enter, so G itself is used only for its row and
column statistics. Both r×r Gram matrices are damped by ``damping`` times the larger factor's
mean Gram diagonal: at the LoRA start (B = 0) ΔA = 0 and B takes the least-squares step, and
while B is still small A is not asked for steps ∝ 1/‖B‖ (undamped, the loss blew up from 1.1 to
64 within 5 steps on the test MLP). The closed form is derived here, not taken
from a published code (there is none); the derivation is checked against a brute-force least-
squares solve in ``tests/test_adapre_lora.py``. Momentum is an EMA of the factor gradients.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.optim import Optimizer

from neuropde.errors import UserError


def balanced_factor_step(Bt: torch.Tensor, At: torch.Tensor, X: torch.Tensor, Y: torch.Tensor,
                         damping: float = 1e-2) -> tuple[torch.Tensor, torch.Tensor]:
    """The balanced least-squares factor update in preconditioned coordinates.

    Parameters
    ----------
    Bt : (m, r) B̃.   At : (r, n) Ã.   X : (m, r) D̃Ãᵀ.   Y : (r, n) B̃ᵀD̃.
    damping : δ·I added to both r×r Gram matrices, relative to the larger mean diagonal.

    Returns
    -------
    ΔB̃ (m, r), ΔÃ (r, n).
    """
    eye = torch.eye(Bt.shape[1], dtype=Bt.dtype, device=Bt.device)
    GA, GB = At @ At.mT, Bt.mT @ Bt
    # Both solves are damped on the scale of the LARGER factor: a near-zero B (the LoRA start)
    # would otherwise ask A for a step ∝ 1/‖B‖ (exact least squares, useless as a step).
    scale = torch.maximum(GA.diagonal().mean(), GB.diagonal().mean())
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    delta = max(damping, torch.finfo(Bt.dtype).eps) * scale * eye
    GA, GB = GA + delta, GB + delta
    overlap = Y @ At.mT                                   # B̃ᵀ D̃ Ãᵀ, (r, r)
    dB = torch.linalg.solve(GA, (X - 0.5 * Bt @ torch.linalg.solve(GB, overlap)).mT).mT
    dA = torch.linalg.solve(GB, Y - 0.5 * overlap @ torch.linalg.solve(GA, At))
    return dB, dA


class AdaPreLoRA(Optimizer):
    """AdaPreLoRA on the factor pairs of :class:`~neuropde.nn.lora.LoRALinear` layers.

    Parameters
    ----------
    layers : the LoRA layers whose (lora_B, lora_A) it updates.
    lr, betas (β₁ momentum of the factor gradients, β₂ of the G² statistics), eps, weight_decay
        (decoupled, on the factors), damping (of the r×r solves).
    """

    def __init__(self, layers: list, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-30,
                 weight_decay: float = 0.0, damping: float = 1e-2):
        self.layers = list(layers)
        for layer in self.layers:
            layer.record_full_grad = True
        groups = [{"params": [layer.lora_B, layer.lora_A]} for layer in self.layers]
        super().__init__(groups, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      damping=damping))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group, layer in zip(self.param_groups, self.layers):
            B, A = group["params"]
            if B.grad is None or A.grad is None:
                continue
            G = layer.full_grad
            if dist.is_available() and dist.is_initialized():
                # DDP averages the factor gradients; the statistics must see the same averaged G
                dist.all_reduce(G)
                G /= dist.get_world_size()
            beta1, beta2 = group["betas"]
            state = self.state[B]
            if not state:
                state.update(step=0, m_B=torch.zeros_like(B), m_A=torch.zeros_like(A),
                             row=torch.zeros(B.shape[0], dtype=B.dtype, device=B.device),
                             col=torch.zeros(A.shape[1], dtype=A.dtype, device=A.device))
            state["step"] += 1
            t = state["step"]
            sq = G.pow(2)
            state["row"].lerp_(sq.mean(dim=1), 1 - beta2)
            state["col"].lerp_(sq.mean(dim=0), 1 - beta2)
            state["m_B"].lerp_(B.grad, 1 - beta1)
            state["m_A"].lerp_(A.grad, 1 - beta1)
            G.zero_()
            row = state["row"] / (1 - beta2 ** t) + group["eps"]
            col = state["col"] / (1 - beta2 ** t) + group["eps"]
            gB = state["m_B"] / (1 - beta1 ** t)
            gA = state["m_A"] / (1 - beta1 ** t)
            # p_i q_j = V̂_ij^{1/4} with V̂ = row colᵀ / mean(row)
            p = row.pow(0.25) * row.mean().pow(-0.125)
            q = col.pow(0.25) * row.mean().pow(-0.125)
            alpha = layer.alpha
            Bt, At = p[:, None] * (alpha * B), A * q[None, :]
            X = gB / alpha / p[:, None]
            Y = gA / q[None, :]
            dBt, dAt = balanced_factor_step(Bt, At, X, Y, group["damping"])
            if group["weight_decay"]:
                B.mul_(1 - group["lr"] * group["weight_decay"])
                A.mul_(1 - group["lr"] * group["weight_decay"])
            B.sub_(dBt / p[:, None] / alpha, alpha=group["lr"])
            A.sub_(dAt / q[None, :], alpha=group["lr"])
        return loss


def adapre_lora(module: nn.Module, lr: float = 1e-3, betas=(0.9, 0.999), weight_decay: float = 0.0,
                damping: float = 1e-2, adamw: dict | None = None) -> Optimizer:
    """``optimizer=adapre_lora``: AdaPreLoRA on the model's LoRA factors, AdamW on any other
    trainable parameter. Needs LoRA layers (:func:`neuropde.nn.lora.add_lora`)."""
    from neuropde.nn.lora import lora_layers
    from neuropde.optim.combined import CombinedOptimizer
    from neuropde.optim.factories import adamw_fallback

    layers = lora_layers(module)
    if not layers:
        other = any(n.endswith("lora_A") and p.requires_grad for n, p in module.named_parameters())
        if other:  # adapters on 1x1 convolutions or spectral weights only
            raise UserError("optimizer=adapre_lora preconditions LoRA adapters of nn.Linear layers, and this "
                            "model's adapters are all on convolutions or spectral weights: add linear to "
                            "model.task.lora_targets, or choose optimizer=adamw")
        raise UserError("optimizer=adapre_lora updates LoRA factors, and this model has none: use it for "
                        "LoRA fine-tuning (a model with LoRALinear layers), or choose optimizer=adamw")
    factors = {id(p) for layer in layers for p in (layer.lora_A, layer.lora_B)}
    rest = [p for p in module.parameters() if p.requires_grad and id(p) not in factors]
    members = {"adapre_lora": AdaPreLoRA(layers, lr=lr, betas=betas, weight_decay=weight_decay, damping=damping)}
    if rest:
        members["adamw"] = adamw_fallback(rest, adamw, lr)
    return CombinedOptimizer(members)
