"""Batched Newton–Schulz orthogonalisation (Muon's NS5) for real and complex matrices.

``newton_schulz`` maps a stack of matrices G = U S Vᴴ to approximately U Vᴴ (the polar factor),
using only matrix products; ``orthogonalize_spectral_weight`` applies it per Fourier mode to
FNO/SFNO spectral weights, and ``scale_factor`` gives the shape factors Muon multiplies it by.
Algorithm and conventions: the project's optimizer reference notes (optimizers.md, sections 2.2–2.5).
"""
from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["newton_schulz", "orthogonalize_spectral_weight", "scale_factor", "coefficients_for"]

# Muon's quintic coefficients: maximal slope at 0, so small singular values grow fast (~485x over
# five steps); the price is that outputs oscillate in ~[0.68, 1.13] instead of converging to 1.
MUON_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
FITTED_TABLE = Path(__file__).with_name("ns_coefficients.json")


@lru_cache(maxsize=1)
def _fitted_table() -> dict[tuple[int, int], tuple[float, float, float]]:
    shapes = json.loads(FITTED_TABLE.read_text())["shapes"]
    return {tuple(int(v) for v in key.split("x")): tuple(entry["coefficients"]) for key, entry in shapes.items()}


def coefficients_for(m: int, n: int, which: str = "muon") -> tuple[float, float, float]:
    """(a, b, c) for an m×n matrix: ``"muon"`` (the standard quintic) or ``"fitted"`` (per shape, from
    ``ns_coefficients.json`` written by ``experiments/optimizers/fit_ns_coefficients.py``).

    A shape is matched to the nearest fitted (min side, max side) bucket when its short side and its
    aspect ratio are both within a factor 1.6 of it; other shapes use Muon's coefficients, as ROOT
    falls back for shapes outside its table.
    """
    if which == "muon":
        return MUON_COEFFICIENTS
    if which != "fitted":
        raise ValueError(f"ns_coefficients must be 'muon' or 'fitted', got {which!r}")
    lo, hi = min(m, n), max(m, n)
    best, dist = MUON_COEFFICIENTS, math.log(1.6)
    for (bl, bh), coef in _fitted_table().items():
        d = max(abs(math.log(lo / bl)), abs(math.log((hi / lo) / (bh / bl))))
        if d <= dist:
            best, dist = coef, d
    return best


def _compute_dtype(input_dtype: torch.dtype, dtype: torch.dtype) -> torch.dtype:
    """Working precision for ``input_dtype`` given the requested ``dtype``."""
    if input_dtype.is_complex:
        # There is no bf16/fp16 complex type: any reduced or single precision request means complex64.
        return torch.complex128 if dtype in (torch.float64, torch.complex128) else torch.complex64
    if dtype.is_complex:
        raise ValueError(f"complex compute dtype {dtype} requested for real input {input_dtype}")
    return dtype


def _iterate_one(x: Tensor, steps: int, a: float, b: float, c: float) -> Tensor:
    """The iteration on one (k, n) matrix with 2-D kernels."""
    for _ in range(steps):
        A = x @ x.mH
        x = torch.addmm(x, torch.addmm(A, A, A, beta=b, alpha=c), x, beta=a)
    return x


def newton_schulz(G: Tensor, steps: int = 5, coefficients: tuple[float, float, float] | str = MUON_COEFFICIENTS,
                  eps: float = 1e-7, dtype: torch.dtype = torch.float32,
                  out_dtype: torch.dtype | None = None) -> Tensor:
    """Approximate polar factor U Vᴴ of every matrix in a batch by the quintic Newton–Schulz iteration.

    Each matrix is scaled to unit Frobenius norm (so its spectral norm is <= 1), then
    ``steps`` times ``X <- a X + (b A + c A²) X`` with ``A = X Xᴴ``; every singular value follows
    σ ↦ aσ + bσ³ + cσ⁵ while the singular vectors stay fixed.

    Parameters
    ----------
    G : Tensor, shape (..., m, n)
        Real or complex matrices (e.g. momentum buffers); leading dimensions are a batch.
    steps : int
        Number of iterations (5 in Muon).
    coefficients : tuple of float, or "muon" / "fitted"
        (a, b, c) of the odd quintic; a name picks them by shape (:func:`coefficients_for`).
    eps : float
        Lower clamp of the Frobenius norm, so a zero matrix gives a zero (not NaN) output.
    dtype : torch.dtype
        Working precision: float32 (default), float64 or bfloat16 for real input. Complex input
        always runs in complex64 (complex128 if float64/complex128 is asked).
    out_dtype : torch.dtype, optional
        Dtype of the result; ``None`` gives ``G``'s. An optimizer adding the result to float32
        weights can keep the working dtype and skip a conversion (torch.optim.Muon does the same;
        converting bf16 back to float32 cost 5 % of a 512² step on the CPU).

    Returns
    -------
    Tensor, shape (..., m, n), dtype ``out_dtype`` or that of ``G``
        The approximately orthogonalised matrices (singular values about [0.68, 1.13] for
        input σ >= 1e-2·σ_max after 5 steps).
    """
    if G.ndim < 2:
        raise ValueError(f"newton_schulz needs (..., m, n) matrices, got shape {tuple(G.shape)}")
    if G.numel() == 0:
        return G.clone()
    *batch, m, n = G.shape
    a, b, c = coefficients_for(m, n, coefficients) if isinstance(coefficients, str) else coefficients
    if not batch and not G.is_complex() and G.device.type == "cpu" and min(m, n) >= 128:
        # one large real matrix on a CPU (an optimizer step): as few small ops around the matmuls as
        # possible; each costs a few µs, which summed to 0.5 % of a 512² Muon step
        X = G.to(_compute_dtype(G.dtype, dtype))
        X = X.mT if m > n else X
        # in place when the cast made a copy (it does for the usual float32 -> bfloat16)
        X = X / X.norm().clamp_min(eps) if X.data_ptr() == G.data_ptr() else X.div_(X.norm().clamp_min(eps))
        X = _iterate_one(X, steps, a, b, c)
        return (X.mT if m > n else X).to(G.dtype if out_dtype is None else out_dtype)
    X = G.reshape(-1, m, n).to(_compute_dtype(G.dtype, dtype))
    # Iterate on the wide orientation: the Gram matrix X Xᴴ is then min(m, n)², the cheap side.
    wide = m <= n
    if not wide:
        X = X.mH
    # Frobenius norm bounds the spectral norm, putting every σ in (0, 1] where the map is designed.
    norm = torch.linalg.vector_norm(X, dim=(-2, -1), keepdim=True).clamp_min(eps)
    X = X.div_(norm) if X.data_ptr() != G.data_ptr() else X / norm  # never write into G
    if X.device.type == "cpu" and min(m, n) >= 128:
        # CPU, large matrices: per-matrix mm/addmm beat bmm/baddbmm (measured 37 vs 42 ms for 8 bf16
        # 512² matrices on 2 cores). Many small ones (spectral modes) and GPUs: batched kernels.
        X = (_iterate_one(X[0], steps, a, b, c)[None] if X.shape[0] == 1
             else torch.stack([_iterate_one(x, steps, a, b, c) for x in X.unbind(0)]))
    else:
        for _ in range(steps):
            A = torch.bmm(X, X.mH)                         # (B, k, k), Hermitian
            poly = torch.baddbmm(A, A, A, beta=b, alpha=c)  # b A + c A²
            X = torch.baddbmm(X, poly, X, beta=a)            # a X + poly X
    if not wide:
        X = X.mH
    return X.reshape(*batch, m, n).to(G.dtype if out_dtype is None else out_dtype)


def orthogonalize_spectral_weight(G: Tensor, **kw) -> Tensor:
    """Newton–Schulz per Fourier mode of an FNO/SFNO spectral weight (or its gradient).

    A spectral weight is one complex C_in x C_out channel-mixing matrix per retained mode; the
    polar factor is taken for each such matrix independently, never for a flattened reshape.

    Parameters
    ----------
    G : Tensor, shape (C_in, C_out, *modes)
        Complex (or real) spectral weight; ``modes`` may be empty.
    **kw
        Passed to :func:`newton_schulz` (``steps``, ``coefficients``, ``eps``, ``dtype``).

    Returns
    -------
    Tensor, shape (C_in, C_out, *modes), dtype of ``G``
    """
    if G.ndim < 2:
        raise ValueError(f"spectral weight must be (C_in, C_out, *modes), got shape {tuple(G.shape)}")
    # Mode axes to the front as the batch, (C_in, C_out) last as the matrix; then back.
    mode_axes = tuple(range(2, G.ndim))
    front = G.permute(*mode_axes, 0, 1)
    out = newton_schulz(front, **kw)
    return out.permute(G.ndim - 2, G.ndim - 1, *range(G.ndim - 2))


def scale_factor(m: int, n: int, convention: str = "original") -> float:
    """Factor multiplying the NS output of an m x n matrix (m = rows = fan_out for nn.Linear).

    Parameters
    ----------
    m, n : int
        Rows and columns of the matrix.
    convention : {"original", "match_rms_adamw"}
        "original": √max(1, m/n) (reference Muon, torch default), update RMS ≈ 1/√n.
        "match_rms_adamw": 0.2·√max(m, n) (Moonlight), update RMS ≈ 0.2 like AdamW's, so AdamW
        learning rates and weight decay can be reused.

    Returns
    -------
    float
    """
    if convention == "original":
        return math.sqrt(max(1.0, m / n))
    if convention == "match_rms_adamw":
        return 0.2 * math.sqrt(max(m, n))
    raise ValueError(f"unknown scale convention {convention!r}; use 'original' or 'match_rms_adamw'")
