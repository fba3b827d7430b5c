"""2D incompressible Navier–Stokes in vorticity form on the periodic square ``[0, L)²``.

    ∂ₜω + u·∇ω = νΔω + f,    u = ∇^⊥ψ = (∂_yψ, −∂_xψ),    −Δψ = ω,

so ``ω = ∂_x v − ∂_y u``. Pseudo-spectral in space (2/3-rule dealiasing of the advection) and
IMEX in time: viscosity implicit (Crank–Nicolson within each stage), advection and forcing
explicit (the 3-stage low-storage Runge–Kutta of Spalart, Moser & Rogers 1991). The combined
scheme is second order in time (the explicit part alone is third order), which the tests measure.

Grid and spectral conventions are those of :mod:`neuropde.pde.spectral`; the spectral state is
``torch.fft.rfft2(ω)`` with the default (unnormalised) scaling, shaped ``(B, n, n // 2 + 1)``.

Initial conditions draw their random Fourier coefficients on a fixed set of wavenumbers that does
not depend on the grid, so a seed gives the same physical field at every resolution.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from neuropde.pde.spectral import dealias_mask, wavenumbers

__all__ = [
    "NavierStokes2D", "fno_forcing", "kolmogorov_forcing", "make_forcing",
    "gaussian_random_field", "mcwilliams_vorticity",
]

# Spalart–Moser–Rogers RK3/CN stages (α, β, γ, ζ):
#   ω_k = ω_{k-1} + dt [α_k Lω_{k-1} + β_k Lω_k + γ_k N_{k-1} + ζ_k N_{k-2}],  L = νΔ, N = −u·∇ω + f.
# α_k + β_k = γ_k + ζ_k is the stage's share of dt (8/15, 2/15, 1/3). Only one old N is kept.
_RK3_CN = (
    (4 / 15, 4 / 15, 8 / 15, 0.0),
    (1 / 15, 1 / 15, 5 / 12, -17 / 60),
    (1 / 6, 1 / 6, 3 / 4, -5 / 12),
)


def _grid(n: int, L: float, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinates ``x_i = i L / n``: x (n, 1), y (1, n)."""
    x = torch.arange(n, dtype=dtype, device=device) * (L / n)
    return x[:, None], x[None, :]


class NavierStokes2D(nn.Module):
    """Batched pseudo-spectral solver for 2D vorticity on ``[0, L)²``.

    An ``nn.Module`` only so that ``.to(device)`` moves its spectral buffers; it has no parameters.
    ``forward`` is :meth:`time_derivative`.

    Parameters
    ----------
    n : grid points per side.
    L : domain side.
    nu : kinematic viscosity.
    forcing : None or Tensor (n, n) or (B, n, n), physical-space vorticity forcing ``f`` (constant in
        time); a batch of forcings drives a batch of B fields, one each.
    dealias : apply the 2/3 rule to the advection term.
    dtype : float32 or float64; inputs are cast to it.
    device : where the buffers live; inputs are moved there.
    """

    def __init__(self, n: int, L: float = 1.0, nu: float = 1e-3, forcing: torch.Tensor | None = None,
                 dealias: bool = True, dtype=torch.float64, device="cpu"):
        super().__init__()
        self.n, self.L, self.nu = int(n), float(L), float(nu)
        kx, ky = wavenumbers(n, L, zero_nyquist=True, dtype=dtype, device=device)
        kxf, kyf = wavenumbers(n, L, dtype=dtype, device=device)
        k2 = kxf ** 2 + kyf ** 2  # (n, n//2+1); the Laplacian keeps the Nyquist modes
        mask = dealias_mask(n, device=device) if dealias else torch.ones_like(k2, dtype=torch.bool)
        self.register_buffer("kx", kx, persistent=False)  # (n, 1), Nyquist zeroed for ∂
        self.register_buffer("ky", ky, persistent=False)  # (1, n//2+1)
        self.register_buffer("k2", k2, persistent=False)
        self.register_buffer("inv_k2", torch.where(k2 > 0, 1 / torch.where(k2 > 0, k2, 1.0), 0.0),
                             persistent=False)
        self.register_buffer("mask", mask.to(dtype), persistent=False)
        if forcing is not None:
            if forcing.dim() not in (2, 3) or tuple(forcing.shape[-2:]) != (n, n):
                raise ValueError(f"forcing must be ({n}, {n}) or (B, {n}, {n}), got {tuple(forcing.shape)}")
            # stored as real pairs: Module.to(dtype) then casts it like the other buffers
            f_hat = torch.view_as_real(torch.fft.rfft2(forcing.to(device=device, dtype=dtype)))
            self.register_buffer("f_hat", f_hat, persistent=False)
        else:
            self.register_buffer("f_hat", None, persistent=False)

    # --- conversions ---------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.k2.dtype

    @property
    def device(self) -> torch.device:
        return self.k2.device

    def to_spectral(self, w: torch.Tensor) -> torch.Tensor:
        """Physical (..., n, n) -> spectral (..., n, n // 2 + 1), cast to the solver's dtype/device."""
        return torch.fft.rfft2(w.to(device=self.device, dtype=self.dtype))

    def to_physical(self, w_hat: torch.Tensor) -> torch.Tensor:
        """Spectral (..., n, n // 2 + 1) -> physical (..., n, n)."""
        return torch.fft.irfft2(w_hat, s=(self.n, self.n))

    # --- right-hand side -----------------------------------------------------------------------
    def _i(self, k: torch.Tensor) -> torch.Tensor:
        return torch.complex(torch.zeros_like(k), k)

    def _velocity_hat(self, w_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        psi_hat = w_hat * self.inv_k2  # −Δψ = ω
        return self._i(self.ky) * psi_hat, -self._i(self.kx) * psi_hat

    def _advection_hat(self, w_hat: torch.Tensor) -> torch.Tensor:
        """Spectrum of the dealiased ``u·∇ω``: (..., n, n//2+1) -> same."""
        w_hat = w_hat * self.mask  # band-limit the factors so the product aliases only outside it
        u_hat, v_hat = self._velocity_hat(w_hat)
        # one batched inverse FFT for the four factors
        u, v, wx, wy = self.to_physical(torch.stack(
            [u_hat, v_hat, self._i(self.kx) * w_hat, self._i(self.ky) * w_hat])).unbind(0)
        return torch.fft.rfft2(u * wx + v * wy) * self.mask

    def _explicit_hat(self, w_hat: torch.Tensor) -> torch.Tensor:
        """Spectrum of the explicit part ``−u·∇ω + f``."""
        n_hat = -self._advection_hat(w_hat)
        if self.f_hat is not None:
            n_hat = n_hat + torch.view_as_complex(self.f_hat)
        return n_hat

    def velocity(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Velocity ``(u, v) = (∂_yψ, −∂_xψ)`` of vorticity (..., n, n); each (..., n, n)."""
        u_hat, v_hat = self._velocity_hat(self.to_spectral(w))
        return self.to_physical(u_hat), self.to_physical(v_hat)

    def advection(self, w: torch.Tensor) -> torch.Tensor:
        """Dealiased ``u·∇ω`` of vorticity (..., n, n) -> (..., n, n)."""
        return self.to_physical(self._advection_hat(self.to_spectral(w)))

    def time_derivative(self, w: torch.Tensor) -> torch.Tensor:
        """``∂ₜω = −u·∇ω + νΔω + f`` of vorticity (..., n, n) -> (..., n, n); differentiable."""
        w_hat = self.to_spectral(w)
        return self.to_physical(self._explicit_hat(w_hat) - self.nu * self.k2 * w_hat)

    forward = time_derivative

    def kinetic_energy(self, w: torch.Tensor) -> torch.Tensor:
        """Mean kinetic energy ``½⟨|u|²⟩`` of vorticity (..., n, n) -> (...)."""
        u, v = self.velocity(w)
        return 0.5 * (u ** 2 + v ** 2).mean(dim=(-2, -1))

    def enstrophy(self, w: torch.Tensor) -> torch.Tensor:
        """Mean enstrophy ``½⟨ω²⟩`` of vorticity (..., n, n) -> (...)."""
        return 0.5 * (w.to(self.dtype) ** 2).mean(dim=(-2, -1))

    # --- time stepping -------------------------------------------------------------------------
    def step(self, w_hat: torch.Tensor, dt: float) -> torch.Tensor:
        """Advance the spectral state by ``dt`` with RK3/CN (second order).

        Parameters
        ----------
        w_hat : Tensor (B, n, n // 2 + 1), complex, in the solver's precision.
        dt : time step.

        Returns
        -------
        Tensor (B, n, n // 2 + 1).
        """
        lin = -self.nu * self.k2  # the diagonal viscous operator νΔ
        n_old = None
        for a, b, g, z in _RK3_CN:
            n_new = self._explicit_hat(w_hat)
            rhs = w_hat + dt * (a * lin * w_hat + g * n_new)
            if z:
                rhs = rhs + (dt * z) * n_old
            w_hat = rhs / (1 - (dt * b) * lin)
            n_old = n_new
        return w_hat

    def simulate(self, w0: torch.Tensor, dt: float, record_times: Sequence[float] | torch.Tensor | float,
                 progress: bool = False) -> torch.Tensor:
        """Integrate from ``t = 0`` and record ω at the requested times.

        Each interval between consecutive record times is split into the fewest equal steps no
        longer than ``dt``, so every record time is hit exactly and the step never overshoots.

        Parameters
        ----------
        w0 : Tensor (B, n, n), initial vorticity.
        dt : largest time step.
        record_times : non-decreasing times ``≥ 0`` (T of them); ``0`` records ``w0``.
        progress : show a tqdm bar over steps.

        Returns
        -------
        Tensor (B, T, n, n) in the solver's dtype, on its device.
        """
        if dt <= 0:
            raise ValueError(f"dt must be positive, got {dt}")
        times = torch.as_tensor(record_times, dtype=torch.float64).reshape(-1).tolist()
        if any(t < 0 for t in times) or any(b < a for a, b in zip(times, times[1:])):
            raise ValueError("record_times must be non-negative and non-decreasing")
        plan, t0 = [], 0.0
        for t in times:
            # the tolerance keeps e.g. 0.3 / 0.1 = 3.0000000000000004 at 3 steps
            m = max(math.ceil((t - t0) / dt - 1e-9), 0)
            plan.append((m, (t - t0) / m if m else 0.0))
            t0 = t
        w_hat = self.to_spectral(w0)
        frames = []
        with tqdm(total=sum(m for m, _ in plan), disable=not progress, desc="NS") as bar:
            for m, h in plan:
                for _ in range(m):
                    w_hat = self.step(w_hat, h)
                    bar.update()
                frames.append(self.to_physical(w_hat))
        return torch.stack(frames, dim=-3)


# --- forcings (physical (n, n) tensors) ------------------------------------------------------------
def fno_forcing(n: int, L: float = 1.0, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """Forcing of the FNO Navier–Stokes benchmark, ``0.1 (sin 2π(x+y)/L + cos 2π(x+y)/L)``: (n, n)."""
    x, y = _grid(n, L, dtype, device)
    phase = 2 * math.pi * (x + y) / L
    return 0.1 * (torch.sin(phase) + torch.cos(phase))


def kolmogorov_forcing(n: int, L: float = 2 * math.pi, k: int = 4, amplitude: float = 1.0, *,
                       dtype=torch.float64, device=None) -> torch.Tensor:
    """Vorticity of the Kolmogorov body force ``F = amplitude · sin(κ y) e_x``, ``κ = 2πk/L``.

    With ``ω = ∂_x v − ∂_y u`` the forcing is ``curl F = −∂_y F_x = −amplitude · κ · cos(κ y)``.

    Returns
    -------
    Tensor (n, n), constant along x.
    """
    x, y = _grid(n, L, dtype, device)
    kappa = 2 * math.pi * k / L
    return (-amplitude * kappa * torch.cos(kappa * y)).expand(n, n).clone()


def make_forcing(name: str, n: int, L: float = 1.0, **kwargs) -> torch.Tensor | None:
    """Forcing by name: ``"fno"``, ``"kolmogorov"`` (kwargs: k, amplitude, dtype, device) or ``"none"``."""
    if name == "fno":
        return fno_forcing(n, L, **kwargs)
    if name == "kolmogorov":
        return kolmogorov_forcing(n, L, **kwargs)
    if name == "none":
        return None
    raise ValueError(f"unknown forcing {name!r}; choose fno, kolmogorov or none")


# --- random initial conditions -------------------------------------------------------------------
def _reference_noise(batch: int, M: int, generator: torch.Generator | None) -> torch.Tensor:
    """Complex normal noise (real and imaginary parts standard normal) on the reference modes.

    Layout like rfft2 on a virtual ``2M-1`` grid: rows ``k_x = 0..M-1, -(M-1)..-1``, columns
    ``k_y = 0..M-1``, shape (batch, 2M-1, M), complex128 on CPU. The ``k_y = 0`` column is made
    Hermitian (``z(-k_x) = conj z(k_x)``) so the field is real, and the mean mode is zero.
    """
    z = torch.view_as_complex(torch.randn(batch, 2 * M - 1, M, 2, generator=generator,
                                          dtype=torch.float64, device="cpu"))
    z[:, M:, 0] = z[:, 1:M, 0].flip(-1).conj()
    z[:, 0, 0] = 0
    return z


def _reference_modes(M: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer wavenumbers of the reference layout: kx (2M-1, 1), ky (1, M), float64."""
    kx = torch.cat([torch.arange(M), torch.arange(-(M - 1), 0)]).double()
    return kx[:, None], torch.arange(M).double()[None, :]


def _embed(coef: torch.Tensor, n: int, dtype, device) -> torch.Tensor:
    """Put reference coefficients (``norm="forward"`` amplitudes) on an n-grid; return the field.

    Only modes ``|k| < n/2`` are used (the Nyquist mode is left empty), so the coarse field is
    the exact low-pass of any finer one. coef (B, 2M-1, M) -> Tensor (B, n, n).
    """
    M = coef.shape[-1]
    K = min(M - 1, (n - 1) // 2)
    spec = coef.new_zeros(coef.shape[0], n, n // 2 + 1)
    spec[:, : K + 1, : K + 1] = coef[:, : K + 1, : K + 1]
    if K > 0:
        spec[:, n - K:, : K + 1] = coef[:, 2 * M - 1 - K:, : K + 1]
    # inverse FFT on CPU in float64 so the field does not depend on the target device
    return torch.fft.irfft2(spec, s=(n, n), norm="forward").to(device=device, dtype=dtype)


def gaussian_random_field(batch: int, n: int, L: float = 1.0, alpha: float = 2.5, tau: float = 7.0,
                          generator: torch.Generator | None = None, ref_modes: int = 64, *,
                          dtype=torch.float64, device="cpu") -> torch.Tensor:
    """Zero-mean Gaussian random field with covariance ``∝ (−Δ + τ²)^(−α)``, FNO normalisation.

    Fourier amplitudes (``field = Σ_k a_k e^{2πi k·x/L}``) are ``a_k = σ λ_k^(−α/2) z_k`` with
    ``λ_k = 4π²|k|²/L² + τ²``, ``σ = τ^(α−1)`` and ``z_k`` complex normal with ``E|z|² = 2``,
    Hermitian. For ``L = 1`` this has the statistics of the FNO benchmark's field (coefficients
    ``n²√2 σ λ^(−α/2)`` times complex normals, real part of the inverse FFT).

    Parameters
    ----------
    batch, n : number of fields, points per side.
    L, alpha, tau : domain side, smoothness, inverse length scale.
    generator : CPU ``torch.Generator``; coefficients are drawn from it on CPU in float64.
    ref_modes : coefficients are drawn for ``|k_x|, |k_y| < ref_modes`` whatever ``n`` is, so a
        seed gives the same field at every resolution (modes ``≥ n/2`` are dropped on small grids).

    Returns
    -------
    Tensor (batch, n, n).
    """
    z = _reference_noise(batch, ref_modes, generator)
    kx, ky = _reference_modes(ref_modes)
    lam = (4 * math.pi ** 2 / L ** 2) * (kx ** 2 + ky ** 2) + tau ** 2
    sigma = tau ** (alpha - 1)
    return _embed(sigma * lam ** (-alpha / 2) * z, n, dtype, device)


def mcwilliams_vorticity(batch: int, n: int, L: float = 2 * math.pi,
                         generator: torch.Generator | None = None, ref_modes: int = 128, *,
                         k0: float = 4.0, tau: float = 1.0, dtype=torch.float64,
                         device="cpu") -> torch.Tensor:
    """McWilliams (1984) decaying-turbulence initial vorticity.

    A Gaussian stream function with ``E|ψ̂_k|² ∝ k^(−1) (τ² + (k/k0)⁴)^(−1)`` (``k = |k|`` in
    units of ``2π/L``), each sample scaled to unit kinetic energy ``½⟨|u|²⟩ = 1`` computed on all
    reference modes (so the scale does not depend on ``n``), and ``ω = −Δψ``.

    Parameters
    ----------
    batch, n, L : number of fields, points per side, domain side.
    generator : CPU ``torch.Generator``; coefficients are drawn from it on CPU in float64.
    ref_modes : coefficients are drawn for ``|k_x|, |k_y| < ref_modes`` whatever ``n`` is; the
        default holds every mode of a 256² grid (the spectrum of ω is nearly flat, so this is the
        resolution at which the field is complete).
    k0, tau : spectral peak and low-wavenumber roll-off.

    Returns
    -------
    Tensor (batch, n, n).
    """
    z = _reference_noise(batch, ref_modes, generator)
    kx, ky = _reference_modes(ref_modes)
    k = torch.sqrt(kx ** 2 + ky ** 2)
    amp = torch.where(k > 0, 1 / torch.sqrt(k.clamp(min=1) * (tau ** 2 + (k / k0) ** 4)), 0.0)
    psi = amp * z
    kappa2 = (2 * math.pi / L) ** 2 * k ** 2
    # ½⟨|u|²⟩ = ½ Σ_k κ²|ψ_k|² over the full plane; the half-plane columns k_y > 0 count twice
    weight = torch.where(ky > 0, 2.0, 1.0)
    energy = 0.5 * (weight * kappa2 * psi.abs() ** 2).sum(dim=(-2, -1))
    psi = psi / energy.sqrt()[:, None, None]
    return _embed(kappa2 * psi, n, dtype, device)
