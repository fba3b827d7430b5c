"""Fourier tools for periodic square grids.

Conventions shared by every module of :mod:`neuropde.pde`:

* the domain is ``[0, L)²`` sampled at ``x_i = i L / n`` with ``n`` points per side;
* fields are shaped ``(..., n, n)`` with axis order ``(..., x, y)``;
* spectra use the ``torch.fft.rfft2`` layout ``(..., n, n // 2 + 1)``: the full set of ``k_x``
  (FFT order) on axis -2 and the non-negative ``k_y`` on axis -1;
* wavenumbers are angular, ``κ = 2π k / L`` with integer ``k``.

:func:`fourier_resample` alone also takes 1-D and other d-D fields (one size per trailing axis).
Everything is batched over leading dimensions, keeps the input's dtype and device, and is
differentiable with autograd.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "wavenumbers", "dealias_mask", "fourier_resample",
    "spectral_grad", "spectral_laplacian", "inverse_laplacian",
]


def _int_modes(n: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer wavenumbers in rfft2 layout: kx (n, 1) in FFT order, ky (1, n // 2 + 1)."""
    kx = torch.fft.fftfreq(n, d=1.0 / n, device=device).round().long()
    ky = torch.arange(n // 2 + 1, device=device)
    return kx[:, None], ky[None, :]


def wavenumbers(n: int, L: float = 1.0, *, zero_nyquist: bool = False,
                dtype=torch.float64, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Angular wavenumbers ``2π k / L`` in rfft2 layout.

    Parameters
    ----------
    n : points per side.
    L : domain side.
    zero_nyquist : set the Nyquist wavenumber (``|k| = n/2``, even ``n``) to 0. Use this for odd
        derivatives: the Nyquist mode is its own conjugate, so ``i κ`` times it is not the
        spectrum of a real field, and the only real-valued choice is to drop it.

    Returns
    -------
    kx : Tensor (n, 1), FFT order (for even ``n`` index ``n/2`` is ``-n/2``).
    ky : Tensor (1, n // 2 + 1).
    """
    ix, iy = _int_modes(n, device)
    kx = (2 * math.pi / L) * ix.to(dtype)
    ky = (2 * math.pi / L) * iy.to(dtype)
    if zero_nyquist and n % 2 == 0:
        kx = torch.where(ix.abs() == n // 2, torch.zeros_like(kx), kx)
        ky = torch.where(iy == n // 2, torch.zeros_like(ky), ky)
    return kx, ky


def dealias_mask(n: int, *, device=None) -> torch.Tensor:
    """The 2/3 rule: keep modes with ``|k_x| < n/3`` and ``|k_y| < n/3``.

    Quadratic products of fields limited to ``|k| ≤ K`` reach ``|k| ≤ 2K`` and alias onto
    ``2K - n``; the retained modes stay clean iff ``n - 2K > K``, i.e. ``K < n/3``.

    Returns
    -------
    Tensor (n, n // 2 + 1), bool.
    """
    kx, ky = _int_modes(n, device)
    return (3 * kx.abs() < n) & (3 * ky < n)


def _resample_axis(c: torch.Tensor, m: int, dim: int) -> torch.Tensor:
    """Map full-FFT coefficients (``norm="forward"``) along ``dim`` from length n to length m.

    Modes ``|k| < min(n, m)/2`` are copied. When the smaller grid is even its Nyquist mode is
    shared: going up, the coarse Nyquist coefficient is split in halves over ``±n/2`` (the real,
    symmetric band-limited interpolant); going down, the fine ``±m/2`` coefficients are summed,
    which is what point sampling aliases them to. So up-then-down is the identity.
    """
    c = c.movedim(dim, -1)
    n = c.shape[-1]
    if m == n:
        return c.movedim(-1, dim)
    out = c.new_zeros(*c.shape[:-1], m)
    s = min(n, m)
    p = (s - 1) // 2  # modes 0..p and -p..-1 exist on both grids without ambiguity
    out[..., : p + 1] = c[..., : p + 1]
    if p > 0:
        out[..., m - p:] = c[..., n - p:]
    if s % 2 == 0:
        h = s // 2
        if m > n:
            out[..., h] = 0.5 * c[..., h]
            out[..., m - h] = 0.5 * c[..., h]
        else:
            out[..., h] = c[..., h] + c[..., n - h]
    return out.movedim(-1, dim)


def fourier_resample(field: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """Resample periodic fields to another grid by spectral truncation or zero padding.

    The one resampler of the package (data generation, models, tests). Exact for band-limited
    fields: going up reproduces the trigonometric interpolant; going down keeps the modes both
    grids hold and folds the fine ``±m/2`` modes onto an even coarse grid's Nyquist mode, so a
    field with ``|k| ≤ m/2`` comes out as its point values. Up-then-down returns the input to
    round-off, for odd and even sizes. Axes are independent, so any number of them works.

    Parameters
    ----------
    field : Tensor (..., n_1, ..., n_d), real.
    size : new lengths ``(m_1, ..., m_d)`` of the last ``d`` axes, e.g. ``(m,)`` for 1-D fields
        (..., n); an int ``m`` means the square grid ``(m, m)`` of this module's (..., n, n) fields.

    Returns
    -------
    Tensor (..., m_1, ..., m_d), same dtype and device.
    """
    if isinstance(size, int):
        if field.dim() < 2 or field.shape[-2] != field.shape[-1]:
            raise ValueError(f"an int size resamples a square grid, got {tuple(field.shape[-2:])}; "
                             "give one size per axis")
        size = (size, size)
    if len(size) > field.dim():
        raise ValueError(f"size {tuple(size)} has more axes than the field {tuple(field.shape)}")
    # only the axes that change are transformed; each step keeps the field real
    dims = [d for d, m in zip(range(-len(size), 0), size) if field.shape[d] != int(m)]
    if not dims:
        return field
    # full (not half) spectrum so that one rule serves every axis; the output is real by symmetry
    c = torch.fft.fftn(field, dim=dims, norm="forward")
    for d in dims:
        c = _resample_axis(c, int(size[d]), d)
    return torch.fft.ifftn(c, dim=dims, norm="forward").real.to(field.dtype)


def _spectral_k(field: torch.Tensor, L: float, zero_nyquist: bool):
    n = field.shape[-1]
    return wavenumbers(n, L, zero_nyquist=zero_nyquist, dtype=field.dtype, device=field.device)


def spectral_grad(field: torch.Tensor, L: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Spectral gradient ``(∂_x f, ∂_y f)`` of periodic fields (Nyquist mode dropped).

    Parameters
    ----------
    field : Tensor (..., n, n), real.
    L : domain side.

    Returns
    -------
    (Tensor (..., n, n), Tensor (..., n, n))
    """
    n = field.shape[-1]
    kx, ky = _spectral_k(field, L, zero_nyquist=True)
    fh = torch.fft.rfft2(field)
    fx = torch.fft.irfft2(fh * torch.complex(torch.zeros_like(kx), kx), s=(n, n))
    fy = torch.fft.irfft2(fh * torch.complex(torch.zeros_like(ky), ky), s=(n, n))
    return fx, fy


def spectral_laplacian(field: torch.Tensor, L: float = 1.0) -> torch.Tensor:
    """Spectral Laplacian ``Δf`` of periodic fields: (..., n, n) -> (..., n, n)."""
    n = field.shape[-1]
    kx, ky = _spectral_k(field, L, zero_nyquist=False)
    return torch.fft.irfft2(-(kx ** 2 + ky ** 2) * torch.fft.rfft2(field), s=(n, n))


def inverse_laplacian(field: torch.Tensor, L: float = 1.0) -> torch.Tensor:
    """Zero-mean ``g`` with ``Δg = f - mean(f)``: (..., n, n) -> (..., n, n).

    The mean of ``f`` is dropped because the periodic Laplacian cannot produce one.
    """
    n = field.shape[-1]
    kx, ky = _spectral_k(field, L, zero_nyquist=False)
    k2 = kx ** 2 + ky ** 2
    inv = torch.where(k2 > 0, -1.0 / torch.where(k2 > 0, k2, 1.0), 0.0)
    return torch.fft.irfft2(inv * torch.fft.rfft2(field), s=(n, n))
