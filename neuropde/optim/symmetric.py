"""Symmetry-compatible update maps and the ``optimizer=symmetric`` factory.

Principle (reference notes, optimizers.md 2.9): the map from momentum to update must commute with
the symmetries of each weight block. A hidden matrix has O(m)×O(n) symmetry: the polar factor
(Muon). An input layer ("embedding": lifting) mixes a few physical input channels into hidden
neurons that can be rotated freely: the right one-sided spectral map M(MᴴM)^{-1/2}, whose Gram
matrix is only fan-in × fan-in. An output layer ("head": projection, reduction) has one row per
output channel and hidden columns: the row-wise normalisation, equivariant to permuting rows
(optionally row-centred, for softmax-type heads whose logits have a shared shift). A router
(rows = experts) gets the left one-sided spectral map (MMᴴ)^{-1/2}M.

All maps work on batches (..., m, n), real or complex. The inverse square roots use the
eigendecomposition of the small Gram matrix with ``eps``·I damping (directions with σ² ≪ eps are
damped, not amplified): exact, and cheap because one side is small for embeddings and routers.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.optim import Optimizer

MAPS = ("rownorm", "right_spectral", "left_spectral")


def row_normalize(M: torch.Tensor, center: bool = False, eps: float = 1e-8) -> torch.Tensor:
    """U_i = M_i / ‖M_i‖ for every row i of (..., m, n); ``center`` first removes the mean row
    (the shared-shift symmetry of softmax layers) and re-centres the output."""
    if center:
        M = M - M.mean(dim=-2, keepdim=True)
    U = M / (torch.linalg.vector_norm(M, dim=-1, keepdim=True) + eps)
    return U - U.mean(dim=-2, keepdim=True) if center else U


def _inverse_sqrt(gram: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(gram + eps·tr(gram)/k·I)^{-1/2} of Hermitian PSD (..., k, k), and the nuclear norm Σ√λ.

    The damping is relative to the mean eigenvalue, so the map does not depend on the scale of M.
    """
    lam, V = torch.linalg.eigh(gram)
    lam = lam.clamp_min(0)
    damp = eps * lam.mean(dim=-1, keepdim=True) + torch.finfo(lam.dtype).tiny
    inv = (V * (lam + damp).rsqrt()[..., None, :].to(V.dtype)) @ V.mH
    return inv, lam.sqrt().sum(dim=-1)


def one_sided_spectral(M: torch.Tensor, side: str = "right", alpha: float = 0.0, eps: float = 1e-8) -> torch.Tensor:
    """Right: ν^α·M(MᴴM)^{-1/2}; left: ν^α·(MMᴴ)^{-1/2}M, with ν = ‖M‖_* the nuclear norm.

    For full-rank M and α = 0 both equal the polar factor U Vᴴ; they differ from Newton–Schulz in
    being exact and in damping (not amplifying) directions far below the mean singular value.
    Computed in float32 (complex64 for complex input).
    """
    work = M.to(torch.complex64 if M.is_complex() else torch.float32)
    if side == "right":
        inv, nu = _inverse_sqrt(work.mH @ work, eps)
        U = work @ inv
    elif side == "left":
        inv, nu = _inverse_sqrt(work @ work.mH, eps)
        U = inv @ work
    else:
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    if alpha:
        U = U * nu[..., None, None].pow(alpha).to(U.dtype)
    return U.to(M.dtype)


def symmetric_map(M: torch.Tensor, kind: str, alpha: float = 0.0, center: bool = False,
                  eps: float = 1e-8) -> torch.Tensor:
    """One of :data:`MAPS` on a batch of momentum matrices (..., m, n)."""
    if kind == "rownorm":
        return row_normalize(M, center=center, eps=eps)
    if kind == "right_spectral":
        return one_sided_spectral(M, "right", alpha, eps)
    if kind == "left_spectral":
        return one_sided_spectral(M, "left", alpha, eps)
    raise ValueError(f"unknown symmetric map {kind!r}; one of {MAPS}")


def role_of(name: str) -> str | None:
    """Symmetry role of a data-facing real matrix from its name: embedding, head, router or None."""
    parts = name.lower().split(".")
    has = lambda *keys: any(k in part for part in parts for k in keys)  # noqa: E731
    if has("router", "gate_proj"):
        return "router"
    if has("lift", "embed", "encoder_in"):
        return "embedding"
    if has("projection", "reduction", "head"):
        return "head"
    return None


ROLE_MAPS = {"embedding": "right_spectral", "head": "rownorm", "router": "left_spectral"}


def symmetric(module: nn.Module, lr: float = 1e-3, weight_decay: float = 0.0, momentum: float = 0.95,
              nesterov: bool = False, ns_steps: int = 5, adjust_lr_fn: str = "match_rms_adamw",
              alpha: float = 1.0, center_head_rows: bool = False, eps: float = 1e-8,
              adamw: dict | None = None, spectral: str = "orthogonalize") -> Optimizer:
    """``optimizer=symmetric``: a symmetry-compatible map per weight block (see the module docstring).

    Hidden matrices and per-mode spectral weights: Newton–Schulz polar factor. Data-facing real
    matrices with both sides ≥ 2: embedding (lifting) → right one-sided spectral, head (projection,
    reduction) → row-norm (``center_head_rows`` for softmax heads), router → left one-sided spectral.
    Everything else (biases, norms, complex output operators, 1×n matrices): AdamW.

    Momentum is the EMA M ← βM + (1−β)G without Nesterov, as in the reference. With
    ``adjust_lr_fn="match_rms_adamw"`` (default) every map's output is rescaled to RMS 0.2, so one
    lr serves every block; ``"none"`` is the reference form W −= lr·ν^α·map(M) (ν the nuclear norm,
    spectral maps only), which needs a learning rate per block.
    """
    from neuropde.optim.grouping import route_parameters
    from neuropde.optim.muon import MatrixMuon, _assemble

    if adjust_lr_fn not in ("match_rms_adamw", "none"):
        raise ValueError(f"adjust_lr_fn must be 'match_rms_adamw' or 'none', got {adjust_lr_fn!r}")
    routes = route_parameters(module)
    by_map: dict[str, list] = {kind: [] for kind in MAPS}
    rest = []
    for name, p in routes["adamw"]:
        role = role_of(name)
        if role and not p.is_complex() and p.dim() >= 2 and min(p.shape[0], p[0].numel()) >= 2:
            by_map[ROLE_MAPS[role]].append(p)
        else:
            rest.append((name, p))
    routes["adamw"] = rest
    opts = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps)
    polar_scale = "match_rms_adamw" if adjust_lr_fn == "match_rms_adamw" else "original"
    groups = [dict(params=ps, rule=kind, alpha=alpha, center=center_head_rows and kind == "rownorm", eps=eps,
                   adjust_lr_fn=adjust_lr_fn) for kind, ps in by_map.items() if ps]
    extra = {"symmetric": MatrixMuon(groups, **opts)} if groups else {}
    return _assemble(routes, "muon", dict(opts, adjust_lr_fn=polar_scale), adamw, spectral, torch_muon=False,
                     extra=extra)
