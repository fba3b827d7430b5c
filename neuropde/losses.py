"""Losses and metrics, defined once for the whole package.

Relative errors are computed per sample over all its points (space and time) and then averaged
over the batch. Sobolev norms of periodic fields use Parseval with the weight
``(1 + 4π²|k|²/L²)^s`` on a domain of side ``L``: with the unnormalised DFT ``û`` of a field on
an ``n^d`` grid, ``‖u‖²_{H^s} = (L^d / n^{2d}) Σ_k (1 + 4π²|k|²/L²)^s |û_k|²``, so ``s = 0`` is the
L² norm (the Riemann sum ``(L/n)^d Σ|u|²``) and refining the grid leaves the norm unchanged.
"""
from __future__ import annotations

import math

import torch


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


def rel_l2(pred: torch.Tensor, true: torch.Tensor, reduce: bool = True, eps: float = 1e-12) -> torch.Tensor:
    """‖pred − true‖₂ / ‖true‖₂ per sample (all points of the sample), then the mean.

    pred, true : (B, ...) ; returns a scalar, or (B,) with ``reduce=False``.
    """
    err = torch.linalg.vector_norm(_flat(pred - true), dim=1) / (
        torch.linalg.vector_norm(_flat(true), dim=1) + eps)
    return err.mean() if reduce else err


def rel_l2_frames(pred: torch.Tensor, true: torch.Tensor, squared: bool = False) -> torch.Tensor:
    """‖pred_k − true_k‖ / ‖true_k‖ (squared on request) of every sample and frame:
    (B, T, *space) -> (B, T). A loss: the clamps keep its gradient finite where an error is zero."""
    num = (pred - true).flatten(2).square().sum(2)
    ratio = num / true.flatten(2).square().sum(2).clamp(min=1e-12)
    return ratio if squared else ratio.clamp(min=1e-12).sqrt()


def rel_l2_per_frame(pred: torch.Tensor, true: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Relative L2 of each frame, averaged over samples: (B, T, ...) -> (T,)."""
    diff = pred.reshape(*pred.shape[:2], -1) - true.reshape(*true.shape[:2], -1)
    num = torch.linalg.vector_norm(diff, dim=-1)
    den = torch.linalg.vector_norm(true.reshape(*true.shape[:2], -1), dim=-1) + eps
    return (num / den).mean(0)


def sobolev_weights(shape: tuple[int, ...], s: float, L: float | tuple[float, ...] = 1.0,
                    device=None, dtype=torch.float64) -> torch.Tensor:
    """``(1 + 4π²|k|²/L²)^s`` on the rFFT grid of a periodic field of spatial ``shape``.

    Returns a tensor shaped like ``torch.fft.rfftn`` output over those axes.
    """
    Ls = (L,) * len(shape) if isinstance(L, (int, float)) else tuple(L)
    ks = []
    for i, (n, length) in enumerate(zip(shape, Ls)):
        freq = torch.fft.rfftfreq(n, d=1.0 / n) if i == len(shape) - 1 else torch.fft.fftfreq(n, d=1.0 / n)
        ks.append(2 * math.pi * freq.to(device=device, dtype=dtype) / length)
    grids = torch.meshgrid(*ks, indexing="ij")
    k2 = sum(g ** 2 for g in grids)
    return (1.0 + k2) ** s


def sobolev_norm(u: torch.Tensor, s: float, L: float | tuple[float, ...] = 1.0, ndim: int = 2,
                 dt: float = 1.0) -> torch.Tensor:
    """H^s norm of periodic fields over their last ``ndim`` axes, Bochner-L² over the others.

    Parameters
    ----------
    u : Tensor (B, *extra, *space) — ``extra`` axes (e.g. time) are summed in L² with weight ``dt``.
    s : Sobolev exponent (any real; negative for dual norms).
    L : domain side(s).
    ndim : number of trailing periodic axes.

    Returns
    -------
    Tensor (B,) : ``(dt Σ_extra ‖u_t‖²_{H^s})^{1/2}``.
    """
    space = u.shape[-ndim:]
    axes = tuple(range(-ndim, 0))
    uh = torch.fft.rfftn(u, dim=axes)
    w = sobolev_weights(space, s, L, device=u.device, dtype=uh.real.dtype)
    power = w * uh.abs() ** 2
    # rFFT stores each conjugate pair once: count the half-spectrum columns 1..n/2-1 twice
    n_last = space[-1]
    mult = torch.full((uh.shape[-1],), 2.0, device=u.device, dtype=power.dtype)
    mult[0] = 1.0
    if n_last % 2 == 0:
        mult[-1] = 1.0
    power = power * mult
    Ls = (L,) * ndim if isinstance(L, (int, float)) else tuple(L)
    volume = math.prod(Ls)
    npts = math.prod(space)
    sq = power.reshape(u.shape[0], -1).sum(1) * volume / npts ** 2
    return torch.sqrt(sq * dt)


def rel_sobolev(pred: torch.Tensor, true: torch.Tensor, s: float, L: float = 1.0, ndim: int = 2,
                reduce: bool = True, eps: float = 1e-12) -> torch.Tensor:
    """Relative H^s error per sample (Bochner over leading non-batch axes), then the mean."""
    err = sobolev_norm(pred - true, s, L, ndim) / (sobolev_norm(true, s, L, ndim) + eps)
    return err.mean() if reduce else err


def make_loss(name: str, s: float = -1.0, L: float = 1.0, ndim: int = 2):
    """Loss by config name: ``rel_l2``, ``h1`` (relative H¹) or ``sobolev`` (relative H^s, s from config)."""
    if name == "rel_l2":
        return rel_l2
    if name == "h1":
        return lambda p, t: rel_sobolev(p, t, 1.0, L, ndim)
    if name == "sobolev":
        return lambda p, t: rel_sobolev(p, t, s, L, ndim)
    raise ValueError(f"unknown loss {name!r}; choose rel_l2, h1 or sobolev (with loss_s)")
