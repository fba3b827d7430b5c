"""Viscous Burgers ``u_t + u u_x = ν u_xx`` on the periodic ``[0, L)``, its exact Cole–Hopf solution
and random initial conditions.

The solver is the ETDRK4 pseudo-spectral scheme of :mod:`neuropde.pde.etdrk4` (diffusion exact in
Fourier space, the dealiased flux ``−½ (u²)_x`` by exponential Runge–Kutta), so one step is a
differentiable map of the field: Φ-ROM (arXiv 2505.14595) takes one such step of a decoded field
as its time derivative, and the same solver generates the training data.

The reference solution uses the Cole–Hopf transform ``u = −2ν φ_x / φ``, under which Burgers
becomes the heat equation ``φ_t = ν φ_xx``. φ is obtained from the heat kernel on the whole line
(φ₀ is periodic for a zero-mean u₀, so this is the periodic heat flow) and the ratio is formed in
log space: φ spans ``e^{−max ∫u₀ / ν}`` orders of magnitude around a front, so summing its Fourier
series cancels away every digit there when ``ν`` is small (e.g. ``e^{−100}`` for ``u₀ = sin x`` and
``ν = 0.01``), whereas normalised kernel weights keep full precision.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from neuropde.pde.etdrk4 import SemilinearSpectral1D, ks_initial_condition

__all__ = ["Burgers1D", "burgers_initial_condition", "cole_hopf_solution"]


class Burgers1D(SemilinearSpectral1D):
    """Viscous Burgers ``u_t + u u_x = ν u_xx`` on ``[0, L)`` by ETDRK4.

    ``𝓛 = ν ∂x²`` has the real symbol ``λ = −ν k²`` (the Nyquist mode keeps its rate, as for any
    even derivative); ``𝓝(u) = −½ ∂x(u²)``, dealiased by the 2/3 rule. The mean of u is conserved.

    A front of jump ``2U`` has the width ``~2ν/U`` of the viscous shock ``−U tanh(U x / 2ν)``, whose
    spectrum decays like ``e^{−π ν k / U}``: resolving it to ``ε`` needs modes up to
    ``k ≈ U ln(1/ε) / (π ν)`` below the 2/3 cutoff ``n/3`` (with ``L = 2π``). Measured for
    ``u₀ = sin x`` at ``t = 2`` (relative L2 error against Cole–Hopf): ``ν = 0.01`` needs
    ``n = 512`` for 7e-4 (``n = 128``: 6e-2, ``n = 256``: 1e-2); ``ν = 0.05`` gets 3e-4 on 128
    points. So the defaults ``n = 128, ν = 0.01`` under-resolve fronts of amplitude-1 data (5-7 %
    against 1024 points for :func:`burgers_initial_condition`): still one consistent discrete
    system for training, but not Burgers to better than that.

    Parameters
    ----------
    n : grid points.
    L : domain length.
    nu : viscosity ``ν ≥ 0`` (``ν = 0`` is inviscid: valid only until a shock forms), or a
        Tensor (B,) of one viscosity per batch row (a parametric family: states must then be
        (B, ·); :meth:`take` selects rows for a mini-batch without recomputing coefficients).
    dtype, device : as :class:`~neuropde.pde.etdrk4.SemilinearSpectral1D`.
    """

    def __init__(self, n: int = 128, L: float = 2 * math.pi, nu: float | torch.Tensor = 0.01, dtype=torch.float64,
                 device="cpu"):
        nu_t = torch.as_tensor(nu, dtype=torch.float64)
        if nu_t.dim() > 1 or not bool((nu_t >= 0).all()):
            raise ValueError(f"nu must be a non-negative viscosity or a 1-D tensor of them, got {nu}; a negative "
                             f"one makes the linear part anti-diffusive and the solution blow up")
        super().__init__(n, L, dtype=dtype, device=device)
        self.nu = float(nu_t) if nu_t.dim() == 0 else nu_t.to(device)

    def linear_symbol(self, k: torch.Tensor) -> torch.Tensor:
        nu = self.nu if isinstance(self.nu, float) else self.nu.to(k.device)[:, None]  # (B, 1) per row
        return (-nu * k ** 2).to(torch.complex128)

    def nonlinear_hat(self, u_hat: torch.Tensor) -> torch.Tensor:
        return -0.5 * self._dx_hat(self._square_hat(u_hat))

    def take(self, index: torch.Tensor) -> "Burgers1D":
        """The solver for a batch whose row b has viscosity ``nu[index[b]]`` (per-row ν only): the
        cached ETDRK4 coefficients (B, K) are indexed, not recomputed."""
        if isinstance(self.nu, float):
            raise ValueError("take() needs a solver built with one viscosity per row (nu a 1-D tensor)")
        index = torch.as_tensor(index, device=self.nu.device)
        sub = Burgers1D(self.n, self.L, self.nu[index], dtype=self.dtype, device=self.device)
        sub._coef_cache = {key: tuple(c[index.to(c.device)] for c in coef) for key, coef in self._coef_cache.items()}
        return sub


def burgers_initial_condition(batch: int, n: int = 128, L: float = 2 * math.pi,
                              generator: torch.Generator | None = None, k_max: int = 3,
                              amplitude: float = 1.0, dtype=torch.float64,
                              device="cpu") -> torch.Tensor:
    """Random smooth zero-mean Fourier series for Burgers.

    ``u(x) = s Σ_{j=1}^{k_max} [a_j cos(2πjx/L) + b_j sin(2πjx/L)]`` with standard normal
    ``a_j, b_j``, scaled per sample to the root-mean-square ``amplitude / √2`` (that of
    ``amplitude · sin x``, so peaks are O(amplitude)). This is
    :func:`~neuropde.pde.etdrk4.ks_initial_condition` with that RMS: a seed gives the same field at
    every resolution. Zero mean makes the Cole–Hopf ``φ₀`` periodic. The steepest descent
    ``max(−u₀')`` is about ``amplitude · k_max · 2π/L``, so fronts form by
    ``t ≈ L / (2π amplitude k_max)``; see :class:`Burgers1D` for the resolution they then need.

    Parameters
    ----------
    batch, n, L : number of fields, grid points, domain length.
    generator : CPU ``torch.Generator``; coefficients are drawn from it on CPU in float64.
    k_max : highest integer wavenumber (below ``n/2``).
    amplitude : peak scale (``√2`` times the RMS).

    Returns
    -------
    Tensor (batch, n).
    """
    return ks_initial_condition(batch, n, L, k_max=k_max, amplitude=amplitude / math.sqrt(2),
                                generator=generator, dtype=dtype, device=device)


def _antiderivative(u: torch.Tensor, L: float) -> torch.Tensor:
    """Periodic ``F`` with ``F' = u`` on the uniform grid of u (M,), up to a constant (irrelevant to
    the Cole–Hopf ratio). Spectral, so exact for fields resolved by the grid."""
    M = u.shape[-1]
    u_hat = torch.fft.rfft(u)
    k = (2 * math.pi / L) * torch.arange(M // 2 + 1, dtype=torch.float64)
    k[0] = 1.0  # the mean mode is zero (checked by the caller); avoid 0/0
    F_hat = u_hat / (1j * k)
    F_hat[0] = 0
    if M % 2 == 0:
        F_hat[-1] = 0  # the Nyquist mode has no real antiderivative
    return torch.fft.irfft(F_hat, n=M)


def _max_slope(u0, L: float, m: int) -> float:
    """``max(u₀', 0)`` by a spectral derivative of u₀ sampled at m points."""
    u = u0(torch.arange(m, dtype=torch.float64) * (L / m)).to(torch.float64)
    k = (2 * math.pi / L) * torch.arange(m // 2 + 1, dtype=torch.float64)
    return max(torch.fft.irfft(1j * k * torch.fft.rfft(u), n=m).max().item(), 0.0)


def cole_hopf_solution(u0: Callable[[torch.Tensor], torch.Tensor], nu: float, L: float, n: int,
                       t: float | Sequence[float], *, n_quad: int | None = None,
                       dtype=torch.float64, device="cpu") -> torch.Tensor:
    """Exact solution of ``u_t + u u_x = ν u_xx`` on the periodic ``[0, L)`` by Cole–Hopf.

    With ``F(y) = ∫₀^y u₀``, ``φ₀ = e^{−F/2ν}`` and the heat kernel,
    ``u(x, t) = ∫ (s/t) w(s) ds / ∫ w(s) ds`` with ``w(s) = exp(−s²/(4νt) − F(x − s)/(2ν))``.
    F is periodic because u₀ has zero mean, so the integral over the line is a sum over periodic
    images. It is evaluated by the trapezoidal rule on ``s = j L / n_quad`` (spectrally accurate
    for this smooth, Gaussian-decaying integrand), with ``F`` from the spectral antiderivative of
    ``u₀`` on that grid, and normalised weights (a softmax of the log-weights) so that nothing
    under- or overflows whatever ``ν``.

    Parameters
    ----------
    u0 : callable mapping float64 points x (M,) to u₀(x) (M,): smooth, L-periodic, zero-mean
        (e.g. ``lambda x: torch.sin(x)`` for ``L = 2π``).
    nu : viscosity ``ν > 0``.
    L : domain length.
    n : output grid points ``x_i = i L / n``.
    t : a time ``≥ 0``, or a sequence of T of them.
    n_quad : quadrature points per period, rounded up to a multiple of n (so every ``x_i`` is a
        node and F is only needed at nodes). Default: 8 nodes per ``sqrt(2νt / (1 + t max u₀'))``,
        the narrowest width the integrand can have, and at least ``2 n``.

    Returns
    -------
    Tensor (n,) for a scalar t, (T, n) for a sequence, in ``dtype`` on ``device``.
    """
    if not nu > 0:
        raise ValueError(f"nu must be positive for the Cole–Hopf solution, got {nu}")
    times = torch.as_tensor(t, dtype=torch.float64)
    if (times < 0).any():
        raise ValueError(f"times must be non-negative, got {times.tolist()}")
    frames = [_cole_hopf_at(u0, float(nu), float(L), int(n), float(s), n_quad)
              for s in times.reshape(-1).tolist()]
    out = torch.stack(frames) if times.dim() else frames[0]
    return out.to(device=device, dtype=dtype)


def _cole_hopf_at(u0, nu: float, L: float, n: int, t: float, n_quad: int | None) -> torch.Tensor:
    """One time of :func:`cole_hopf_solution`: Tensor (n,) float64."""
    x = torch.arange(n, dtype=torch.float64) * (L / n)
    if t == 0:
        return u0(x).to(torch.float64)
    if n_quad is None:
        # the log-weight's curvature in s is 1/(2νt) + u₀'/(2ν): steepest ascent of u₀ narrows it most
        width = math.sqrt(2 * nu * t / (1 + t * _max_slope(u0, L, 16 * n)))
        n_quad = max(2 * n, math.ceil(8 * L / width))
    per_x = math.ceil(n_quad / n)
    M = per_x * n
    y = torch.arange(M, dtype=torch.float64) * (L / M)
    u0_y = u0(y).to(torch.float64)
    if u0_y.mean().abs() > 1e-10 * u0_y.abs().max().clamp(min=1e-300):
        raise ValueError(f"u0 must have zero mean over [0, L) (got {u0_y.mean().item():.3g}); "
                         f"otherwise φ₀ = exp(−∫u₀/2ν) is not periodic. Subtract the mean and "
                         f"shift x by mean·t (Galilean invariance)")
    F = _antiderivative(u0_y, L)
    F = F - F.min()
    # weights beyond |s| = R are below e^{−40} of the largest: the Gaussian must beat the full
    # range of F/2ν, which can favour far nodes by up to e^{max F / 2ν}
    R = math.sqrt(4 * nu * t * (40 + F.max().item() / (2 * nu)))
    J = math.ceil(R / (L / M))
    j = torch.arange(-J, J + 1)
    s = j.to(torch.float64) * (L / M)  # (S,) offsets x − y
    idx = (torch.arange(n)[:, None] * per_x - j) % M  # (n, S): node index of y = x_i − s_j
    log_w = -s ** 2 / (4 * nu * t) - F[idx] / (2 * nu)
    return (torch.softmax(log_w, dim=-1) * s).sum(-1) / t
