"""1-D periodic semilinear PDEs ``u_t = 𝓛u + 𝓝(u)`` on ``[0, L)`` by ETDRK4.

The linear part ``𝓛`` is diagonal in Fourier space (a symbol ``λ(k)``) and is integrated exactly;
the nonlinear part is handled by the fourth-order exponential Runge–Kutta scheme of Cox & Matthews
(2002). Its coefficients are the φ-functions of ``z = hλ``, which cancel catastrophically for small
``|z|``; following Kassam & Trefethen (2005) they are evaluated as means over a circle of radius 1
around each ``z`` (Cauchy's integral formula with the trapezoidal rule), where no cancellation
happens, in float64 and only then cast to the solver's precision.

Conventions: the grid is ``x_i = i L / n``; the spectral state is ``torch.fft.rfft(u)`` with the
default (unnormalised) scaling, shaped ``(B, n // 2 + 1)``; wavenumbers are angular,
``k = 2π j / L`` with ``j = 0 .. n // 2``. The quadratic nonlinearities are dealiased by the 2/3
rule (modes with ``3 j ≥ n`` are zeroed in the factors and in the product), and odd derivatives
drop the Nyquist mode (``i k`` times a self-conjugate coefficient is not the spectrum of a real
field).

Models: :class:`KuramotoSivashinsky` and :class:`KortewegDeVries`, with random initial conditions
:func:`ks_initial_condition` and :func:`kdv_initial_condition`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = [
    "KortewegDeVries", "KuramotoSivashinsky", "SemilinearSpectral1D",
    "etdrk4_coefficients", "kdv_initial_condition", "ks_initial_condition",
]

_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}


def etdrk4_coefficients(symbol: torch.Tensor, dt: float,
                        n_contour: int = 64) -> tuple[torch.Tensor, ...]:
    """ETDRK4 (Cox–Matthews) coefficients for a diagonal linear operator, in Kassam–Trefethen notation.

    With ``z = hλ`` (``h = dt``)::

        E  = e^z,    E2 = e^{z/2},    Q = h (e^{z/2} − 1) / z,
        f1 = h [−4 − z + e^z (4 − 3z + z²)] / z³,
        f2 = h [ 2 + z + e^z (z − 2)] / z³,
        f3 = h [−4 − 3z − z² + e^z (4 − z)] / z³,

    whose limits for ``z → 0`` are ``E = E2 = 1``, ``Q = h/2`` and ``f1 = f2 = f3 = h/6`` (the
    scheme then reduces to classical RK4). ``Q, f1, f2, f3`` are evaluated as the mean of the
    formula over ``n_contour`` points ``z + e^{iθ_j}``, ``θ_j = 2π (j + ½) / n_contour``: the
    functions are entire, so this is Cauchy's integral formula by the trapezoidal rule, exact to
    round-off for 64 points, and no point lies near the cancellation at 0 when ``z`` is real or
    imaginary (the offsets avoid both axes). Everything is computed in float64/complex128.

    Parameters
    ----------
    symbol : Tensor (K,) or (B, K) (one operator per batch row, e.g. per-sample viscosities), real or
        complex, the eigenvalues ``λ`` of the linear operator.
        ``Re(hλ)`` must stay below ~700 (``e^z`` overflows beyond).
    dt : time step ``h``.
    n_contour : contour points (even, so that real symbols give real means up to round-off).

    Returns
    -------
    (E, E2, Q, f1, f2, f3) : Tensors shaped like ``symbol``, float64 when ``symbol`` is real-valued (real dtype, or
        complex with zero imaginary parts: the real part of the contour mean is kept, as in
        Kassam–Trefethen), complex128 otherwise (the full complex mean, nothing discarded).
    """
    if n_contour < 2 or n_contour % 2:
        raise ValueError(f"n_contour must be an even number >= 2 (64 is plenty), got {n_contour}")
    lam = symbol.detach().to(torch.complex128)
    real = not symbol.is_complex() or bool((symbol.imag == 0).all())
    z = dt * lam
    j = torch.arange(n_contour, dtype=torch.float64, device=lam.device)
    theta = (2 * math.pi / n_contour) * (j + 0.5)
    zc = z[..., None] + torch.polar(torch.ones_like(theta), theta)  # (..., K, M) contour points
    ez = torch.exp(zc)
    zc3 = zc ** 3
    Q = dt * ((torch.exp(zc / 2) - 1) / zc).mean(-1)
    f1 = dt * ((-4 - zc + ez * (4 - 3 * zc + zc ** 2)) / zc3).mean(-1)
    f2 = dt * ((2 + zc + ez * (zc - 2)) / zc3).mean(-1)
    f3 = dt * ((-4 - 3 * zc - zc ** 2 + ez * (4 - zc)) / zc3).mean(-1)
    out = (torch.exp(z), torch.exp(z / 2), Q, f1, f2, f3)
    return tuple(c.real.contiguous() for c in out) if real else out


class SemilinearSpectral1D(nn.Module):
    """Batched pseudo-spectral ETDRK4 solver for ``u_t = 𝓛u + 𝓝(u)`` on the periodic ``[0, L)``.

    Subclasses define :meth:`linear_symbol` (the Fourier symbol ``λ(k)`` of ``𝓛``) and
    :meth:`nonlinear_hat` (the spectrum of ``𝓝(u)``, dealiased; :meth:`_square_hat` and
    :meth:`_dx_hat` cover quadratic conservation-law terms). An ``nn.Module`` only so that
    ``.to(device)`` moves its buffers; it has no parameters. ``forward`` is :meth:`time_derivative`.

    Parameters
    ----------
    n : grid points.
    L : domain length.
    dtype : float32 or float64; inputs are cast to it, spectra use the complex counterpart.
    device : where the buffers live; inputs are moved there.
    """

    def __init__(self, n: int, L: float, dtype=torch.float64, device="cpu"):
        super().__init__()
        if dtype not in _COMPLEX:
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        if n < 4:
            raise ValueError(f"n must be at least 4 grid points, got {n}")
        self.n, self.L = int(n), float(L)
        j = torch.arange(self.n // 2 + 1, device=device)
        k = (2 * math.pi / self.L) * j.to(dtype)
        self.register_buffer("k", k, persistent=False)  # (K,), Nyquist kept for even derivatives
        self.register_buffer("k_odd", self._odd(k), persistent=False)  # (K,), for odd derivatives
        self.register_buffer("mask", (3 * j < self.n).to(dtype), persistent=False)  # 2/3 rule
        # ETDRK4 coefficients per (dt, dtype, device); a dict rather than buffers so that changing
        # dt or moving the module simply builds a new entry
        self._coef_cache: dict[tuple, tuple[torch.Tensor, ...]] = {}

    # --- to be defined by subclasses -----------------------------------------------------------
    def linear_symbol(self, k: torch.Tensor) -> torch.Tensor:
        """Symbol ``λ(k)`` of the linear operator at rfft wavenumbers k (K,) float64 -> (K,) complex."""
        raise NotImplementedError

    def nonlinear_hat(self, u_hat: torch.Tensor) -> torch.Tensor:
        """Spectrum of ``𝓝(u)``, dealiased: (B, K) complex -> (B, K) complex."""
        raise NotImplementedError

    # --- helpers -------------------------------------------------------------------------------
    def _odd(self, k: torch.Tensor) -> torch.Tensor:
        """Wavenumbers (K,) with the Nyquist entry zeroed (even n): use inside odd derivatives."""
        if self.n % 2 == 0:
            k = k.clone()
            k[-1] = 0
        return k

    def _k64(self) -> torch.Tensor:
        """Wavenumbers (K,) in float64 (recomputed, so a float32 solver gets an accurate symbol)."""
        j = torch.arange(self.n // 2 + 1, dtype=torch.float64, device=self.device)
        return (2 * math.pi / self.L) * j

    def _dx_hat(self, v_hat: torch.Tensor) -> torch.Tensor:
        """Spectrum of ``∂x v`` (Nyquist dropped): (..., K) -> (..., K)."""
        return torch.complex(torch.zeros_like(self.k_odd), self.k_odd) * v_hat

    def _square_hat(self, u_hat: torch.Tensor) -> torch.Tensor:
        """Spectrum of the dealiased ``u²``: (..., K) -> (..., K).

        Band-limiting the factor to ``3j < n`` makes the product's aliases land only on modes that
        the second mask removes, so the retained modes are exact.
        """
        u = self.to_physical(u_hat * self.mask)
        return torch.fft.rfft(u * u) * self.mask

    # --- conversions ---------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.k.dtype

    @property
    def complex_dtype(self) -> torch.dtype:
        return _COMPLEX[self.dtype]

    @property
    def device(self) -> torch.device:
        return self.k.device

    def grid(self) -> torch.Tensor:
        """Grid points ``x_i = i L / n``: Tensor (n,) in the solver's dtype and device."""
        return torch.arange(self.n, dtype=self.dtype, device=self.device) * (self.L / self.n)

    def to_spectral(self, u: torch.Tensor) -> torch.Tensor:
        """Physical (..., n) -> spectral (..., n // 2 + 1), cast to the solver's dtype/device."""
        return torch.fft.rfft(u.to(device=self.device, dtype=self.dtype))

    def to_physical(self, u_hat: torch.Tensor) -> torch.Tensor:
        """Spectral (..., n // 2 + 1) -> physical (..., n)."""
        return torch.fft.irfft(u_hat, n=self.n)

    # --- right-hand side -----------------------------------------------------------------------
    def symbol(self) -> torch.Tensor:
        """``λ(k)`` in the solver's complex dtype: Tensor (K,)."""
        return self.linear_symbol(self._k64()).to(self.complex_dtype)

    def time_derivative(self, u: torch.Tensor) -> torch.Tensor:
        """``u_t = 𝓛u + 𝓝(u)`` of fields (..., n) -> (..., n); differentiable (for physics losses)."""
        if u.shape[-1] != self.n:
            raise ValueError(f"u must end in the solver's n={self.n} grid points, got shape "
                             f"{tuple(u.shape)}; resample it or build the solver with that n")
        u_hat = self.to_spectral(u)
        return self.to_physical(self.symbol() * u_hat + self.nonlinear_hat(u_hat))

    forward = time_derivative

    # --- time stepping -------------------------------------------------------------------------
    @staticmethod
    def _check_dt(dt: float) -> float:
        dt = float(dt)
        if not dt > 0 or not math.isfinite(dt):
            raise ValueError(f"dt must be a positive finite time step, got {dt}; pass e.g. dt=0.25")
        return dt

    def coefficients(self, dt: float) -> tuple[torch.Tensor, ...]:
        """ETDRK4 coefficients ``(E, E2, Q, f1, f2, f3)`` for step dt, each (K,), cached per dt.

        Real dtype for real symbols (dissipative models like KS), complex otherwise (KdV).
        """
        dt = self._check_dt(dt)
        key = (dt, self.dtype, self.device)
        if key not in self._coef_cache:
            coef = etdrk4_coefficients(self.linear_symbol(self._k64()), dt)
            target = self.complex_dtype if coef[0].is_complex() else self.dtype
            self._coef_cache[key] = tuple(c.to(target) for c in coef)
        return self._coef_cache[key]

    def step(self, u_hat: torch.Tensor, dt: float) -> torch.Tensor:
        """Advance the spectral state by ``dt`` with one ETDRK4 (Cox–Matthews) step.

        Parameters
        ----------
        u_hat : Tensor (B, n // 2 + 1), complex, in the solver's precision.
        dt : time step.

        Returns
        -------
        Tensor (B, n // 2 + 1).
        """
        E, E2, Q, f1, f2, f3 = self.coefficients(dt)
        nl = self.nonlinear_hat
        n_u = nl(u_hat)
        a = E2 * u_hat + Q * n_u
        n_a = nl(a)
        b = E2 * u_hat + Q * n_a
        n_b = nl(b)
        c = E2 * a + Q * (2 * n_b - n_u)
        n_c = nl(c)
        return E * u_hat + f1 * n_u + 2 * f2 * (n_a + n_b) + f3 * n_c

    def simulate(self, u0: torch.Tensor, dt: float, record_times: Sequence[float] | torch.Tensor | float,
                 progress: bool = False) -> torch.Tensor:
        """Integrate from ``t = 0`` with fixed steps ``dt`` and record u at the requested times.

        The step is fixed (not adapted to the record times, unlike the Navier–Stokes solver) so
        that the ETDRK4 coefficients are computed once; every record time must therefore be a
        whole number of steps (to within 1e-6 of a step).

        Parameters
        ----------
        u0 : Tensor (B, n) or (n,), initial field; (n,) is treated as a batch of one.
        dt : time step.
        record_times : non-decreasing times ``≥ 0`` (T of them), multiples of dt; ``0`` records ``u0``.
        progress : show a tqdm bar over steps.

        Returns
        -------
        Tensor (B, T, n) in the solver's dtype, on its device.
        """
        dt = self._check_dt(dt)
        if u0.dim() not in (1, 2) or u0.shape[-1] != self.n:
            raise ValueError(f"u0 must be (B, {self.n}) or ({self.n},) for this solver's n={self.n}, "
                             f"got {tuple(u0.shape)}; resample it to n={self.n} or build the solver "
                             f"with n={u0.shape[-1]}, and stack fields along one batch dimension")
        times = torch.as_tensor(record_times, dtype=torch.float64).reshape(-1).tolist()
        if not times:
            raise ValueError("record_times is empty; pass at least one time, e.g. [0.0, T]")
        if any(t < 0 for t in times) or any(b < a for a, b in pairwise(times)):
            raise ValueError(f"record_times must be non-negative and non-decreasing, got {times}; sort them")
        counts = []
        for t in times:
            r = t / dt
            m = round(r)
            # the tolerance keeps e.g. 0.3 / 0.1 = 2.9999999999999996 at 3 steps
            if abs(r - m) > 1e-6:
                raise ValueError(f"record time {t} is not a multiple of dt={dt} ({r:.6g} steps); "
                                 f"choose a dt that divides every record time (e.g. "
                                 f"dt={t / math.ceil(r):.6g} for this one) or record on multiples of dt")
            counts.append(m)
        u_hat = self.to_spectral(u0.reshape(-1, self.n))
        frames, done = [], 0
        with tqdm(total=counts[-1], disable=not progress, desc=type(self).__name__) as bar:
            for m in counts:
                for _ in range(m - done):
                    u_hat = self.step(u_hat, dt)
                    bar.update()
                done = m
                frames.append(self.to_physical(u_hat))
        return torch.stack(frames, dim=-2)


class KuramotoSivashinsky(SemilinearSpectral1D):
    """Kuramoto–Sivashinsky ``u_t + u u_x + u_xx + u_xxxx = 0`` on ``[0, L)``.

    ``𝓛 = −∂x² − ∂x⁴`` has symbol ``λ = k² − k⁴`` (long waves ``|k| < 1`` grow, short ones decay);
    ``𝓝(u) = −½ ∂x(u²)``. The dynamics are chaotic for ``L ≳ 22``; the mean of u is conserved.

    Parameters
    ----------
    n : grid points (64 resolves ``L = 22``).
    L : domain length.
    dtype, device : as :class:`SemilinearSpectral1D`.
    """

    def __init__(self, n: int = 64, L: float = 22.0, dtype=torch.float64, device="cpu"):
        super().__init__(n, L, dtype=dtype, device=device)

    def linear_symbol(self, k: torch.Tensor) -> torch.Tensor:
        # even derivatives: the Nyquist mode keeps its (real) rate
        return (k ** 2 - k ** 4).to(torch.complex128)

    def nonlinear_hat(self, u_hat: torch.Tensor) -> torch.Tensor:
        return -0.5 * self._dx_hat(self._square_hat(u_hat))


class KortewegDeVries(SemilinearSpectral1D):
    """Korteweg–de Vries ``u_t + u u_x + δ² u_xxx = 0`` on ``[0, L)`` (Zabusky–Kruskal form).

    With ``∂x → i k``, ``−δ² ∂x³ → −δ² (i k)³ = i δ² k³``: the symbol is purely imaginary
    (dispersion, no dissipation), with the Nyquist wavenumber dropped as for any odd derivative.
    ``𝓝(u) = −½ ∂x(u²)``. Mass ``∫u`` and momentum ``∫u²`` are conserved.

    Parameters
    ----------
    n : grid points.
    L : domain length.
    delta : dispersion length ``δ`` (0.022 as in Zabusky & Kruskal 1965, with ``L = 2``).
    dtype, device : as :class:`SemilinearSpectral1D`.
    """

    def __init__(self, n: int = 128, L: float = 2.0, delta: float = 0.022, dtype=torch.float64,
                 device="cpu"):
        super().__init__(n, L, dtype=dtype, device=device)
        self.delta = float(delta)

    def linear_symbol(self, k: torch.Tensor) -> torch.Tensor:
        k = self._odd(k)
        return torch.complex(torch.zeros_like(k), self.delta ** 2 * k ** 3)

    def nonlinear_hat(self, u_hat: torch.Tensor) -> torch.Tensor:
        return -0.5 * self._dx_hat(self._square_hat(u_hat))


# --- random initial conditions -------------------------------------------------------------------
def _grid64(n: int, L: float) -> torch.Tensor:
    return torch.arange(n, dtype=torch.float64) * (L / n)


def ks_initial_condition(batch: int, n: int = 64, L: float = 22.0, k_max: int = 8, amplitude: float = 0.1,
                         generator: torch.Generator | None = None, dtype=torch.float64,
                         device="cpu") -> torch.Tensor:
    """Random zero-mean Fourier series for Kuramoto–Sivashinsky.

    ``u(x) = s Σ_{j=1}^{k_max} [a_j cos(2πjx/L) + b_j sin(2πjx/L)]`` with ``a_j, b_j`` standard
    normal and ``s`` chosen per sample so that its root-mean-square over the domain is exactly
    ``amplitude`` (``s = amplitude / sqrt(½ Σ (a_j² + b_j²))``). The default is small compared with
    the attractor (RMS ≈ 1.3 at ``L = 22``): the unstable modes grow and the run forgets the
    initial condition, so generated data should drop a burn-in (``t ≈ 50`` is ample at ``L = 22``).
    The series is evaluated on the grid, so a seed gives the same field at every resolution.

    Parameters
    ----------
    batch, n, L : number of fields, grid points, domain length.
    k_max : highest integer wavenumber; must be below ``n/2`` so every mode is resolved.
    amplitude : RMS of each sample.
    generator : CPU ``torch.Generator``; coefficients are drawn from it on CPU in float64.

    Returns
    -------
    Tensor (batch, n).
    """
    if not 1 <= k_max < n / 2:
        raise ValueError(f"k_max must be between 1 and {(n - 1) // 2} (below n/2) to be resolved on n={n} "
                         f"points, got {k_max}; lower k_max or raise n")
    ab = torch.randn(batch, 2, k_max, generator=generator, dtype=torch.float64)
    scale = amplitude / (0.5 * (ab ** 2).sum(dim=(1, 2))).sqrt()
    j = torch.arange(1, k_max + 1, dtype=torch.float64)
    phase = (2 * math.pi / L) * _grid64(n, L)[:, None] * j  # (n, k_max)
    u = ab[:, 0] @ torch.cos(phase).T + ab[:, 1] @ torch.sin(phase).T
    return (scale[:, None] * u).to(device=device, dtype=dtype)


def kdv_initial_condition(batch: int, n: int = 128, L: float = 2.0, generator: torch.Generator | None = None,
                          n_waves: int = 2, k_max: int = 3, amplitude: tuple[float, float] = (0.25, 0.5),
                          dtype=torch.float64, device="cpu") -> torch.Tensor:
    """Random sum of sinusoids for Korteweg–de Vries.

    ``u(x) = Σ_{i=1}^{n_waves} A_i sin(2π m_i x / L + φ_i)`` with integer ``m_i`` uniform in
    ``1..k_max``, ``A_i`` uniform in ``amplitude`` and ``φ_i`` uniform in ``[0, 2π)``. No random sign:
    a sign flip is a phase shift by π, already covered. The mean is zero.

    The default amplitudes cap the peak at 1, the Zabusky–Kruskal amplitude: with ``δ = 0.022``
    the solitons that emerge by ``t = 1`` roughly double the peak and are only a few grid spacings
    wide (width ``2δ/√c`` for a soliton of height ``3c``), so taller waves are not resolved by 128
    points. Measured over 64 samples and ``t ∈ [0, 1]``: 128 points agree with 512 to ≤ 1e-3
    relative L2 (median 1e-4), whereas single waves of amplitude 2 are off by 10-20%. Steps
    ``dt ≤ 1e-3`` are accurate to ~1e-6 there (the ETDRK4 error grows ~16× per doubling of dt).

    Parameters
    ----------
    batch, n, L : number of fields, grid points, domain length.
    generator : CPU ``torch.Generator``; everything is drawn from it on CPU in float64.
    n_waves, k_max, amplitude : number of sinusoids, their highest wavenumber, amplitude range.

    Returns
    -------
    Tensor (batch, n).
    """
    if not 1 <= k_max < n / 2:
        raise ValueError(f"k_max must be between 1 and {(n - 1) // 2} (below n/2) to be resolved on n={n} "
                         f"points, got {k_max}; lower k_max or raise n")
    if n_waves < 1:
        raise ValueError(f"n_waves must be at least 1, got {n_waves}")
    lo, hi = amplitude
    m = torch.randint(1, k_max + 1, (batch, n_waves), generator=generator).to(torch.float64)
    amp = lo + (hi - lo) * torch.rand(batch, n_waves, generator=generator, dtype=torch.float64)
    phi = 2 * math.pi * torch.rand(batch, n_waves, generator=generator, dtype=torch.float64)
    x = _grid64(n, L)
    u = (amp[..., None] * torch.sin((2 * math.pi / L) * m[..., None] * x + phi[..., None])).sum(1)
    return u.to(device=device, dtype=dtype)
