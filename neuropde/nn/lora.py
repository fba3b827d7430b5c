"""Low-rank adapters: a frozen ``nn.Linear`` plus a trainable α·B A (LeMON's parametrisation).

y = W₀x + b₀ + α·B A x with B ∈ ℝ^{out×r} (zeros at start, so the adapted model equals the base
model) and A ∈ ℝ^{r×in} with entries N(0, 1/r); there is no 1/r factor on α (reference notes,
lemon.md 2.5). ``peft`` users get the same model with ``lora_alpha = α·r``.

For AdaPreLoRA the layer can also accumulate the gradient of the full weight, G = ∂L/∂W (out×in),
from the output gradient and the input (a backward hook); its row and column statistics
precondition the factor update. That costs one out×in buffer per layer, like a weight gradient.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class LoRALinear(nn.Module):
    """``base`` frozen, ``lora_B @ lora_A`` trainable.

    Parameters
    ----------
    base : nn.Linear, weight (out, in).
    rank : r.
    alpha : scale of the low-rank term (no 1/r).
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float = 1.0):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        out_features, in_features = base.weight.shape
        dev, dt = base.weight.device, base.weight.dtype
        self.lora_A = nn.Parameter(torch.randn(rank, in_features, device=dev, dtype=dt) / math.sqrt(rank))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank, device=dev, dtype=dt))
        self.alpha = float(alpha)
        self.record_full_grad = False
        # G = ∂L/∂W accumulated over backward passes until the optimizer reads and clears it
        self.register_buffer("full_grad", torch.zeros(out_features, in_features, device=dev, dtype=dt),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in) -> (..., out)."""
        y = self.base(x) + self.alpha * nn.functional.linear(nn.functional.linear(x, self.lora_A), self.lora_B)
        if self.record_full_grad and y.requires_grad:
            inputs = x.detach()

            def accumulate(dy: torch.Tensor) -> None:
                self.full_grad.add_(dy.reshape(-1, dy.shape[-1]).mT @ inputs.reshape(-1, inputs.shape[-1]))

            y.register_hook(accumulate)
        return y

    def merged_weight(self) -> torch.Tensor:
        """W₀ + α·B A, shape (out, in)."""
        return self.base.weight + self.alpha * self.lora_B @ self.lora_A

    def extra_repr(self) -> str:
        return f"rank={self.lora_A.shape[0]}, alpha={self.alpha}"


def add_lora(module: nn.Module, rank: int, alpha: float = 1.0, skip: tuple[str, ...] = ()) -> list[str]:
    """Replace every ``nn.Linear`` in ``module`` (except under names containing a ``skip`` entry, and
    the output projection of ``nn.MultiheadAttention``, whose forward reads its weight directly) by
    a :class:`LoRALinear`, freeze every other parameter, and return the names of the adapted layers."""
    for p in module.parameters():
        p.requires_grad_(False)
    adapted = []
    for name, child in list(module.named_modules()):
        if isinstance(child, nn.MultiheadAttention):  # its forward reads out_proj.weight itself
            continue
        for attr, sub in list(child.named_children()):
            full = f"{name}.{attr}" if name else attr
            if isinstance(sub, nn.Linear) and not any(s in full for s in skip):
                setattr(child, attr, LoRALinear(sub, rank, alpha))
                adapted.append(full)
    if not adapted:
        raise ValueError("add_lora found no nn.Linear layer to adapt")
    return adapted


def lora_layers(module: nn.Module) -> list[LoRALinear]:
    """Every :class:`LoRALinear` in ``module`` whose factors are trainable."""
    return [m for m in module.modules() if isinstance(m, LoRALinear) and m.lora_A.requires_grad]
