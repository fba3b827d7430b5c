"""First-order-in-time 1-D periodic families ``u_t = 𝓛u + 𝓝(u)`` for multi-operator data (LeMON,
arXiv 2408.16168), integrated by the ETDRK4 solver of :mod:`neuropde.pde.etdrk4`.

Heat and linear advection are linear: with ``𝓝 = 0`` one ETDRK4 step is the exact propagator
``e^{hλ}``, so any step is exact. Fisher–KPP, Allen–Cahn and Cahn–Hilliard put their whole linear
part into ``𝓛`` (the growth rate r, the ``+u`` of Allen–Cahn, the ``−∂x²u − γ∂x⁴u`` of
Cahn–Hilliard), so that the linear growth or decay of each Fourier mode is exact, and keep only
the nonlinear monomial in ``𝓝``. Cubic terms are computed on a grid padded to ``2n`` points, where
the product of the retained modes has no aliases (the 2/3 rule of the base class only clears
quadratic products).
"""
from __future__ import annotations

import torch

from neuropde.pde.etdrk4 import SemilinearSpectral1D

__all__ = ["Advection1D", "AllenCahn1D", "CahnHilliard1D", "FisherKPP1D", "Heat1D"]


class _Linear1D(SemilinearSpectral1D):
    """Base of the linear families: no nonlinear term, so ETDRK4 reduces to ``û ← e^{hλ} û``."""

    def nonlinear_hat(self, u_hat: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(u_hat)


class Heat1D(_Linear1D):
    """Heat equation ``u_t = κ u_xx`` on ``[0, L)``: symbol ``λ = −κ k²``.

    Parameters
    ----------
    n, L : grid points and domain length.
    kappa : diffusivity ``κ > 0``.
    dtype, device : as :class:`~neuropde.pde.etdrk4.SemilinearSpectral1D`.
    """

    def __init__(self, n: int, L: float, kappa: float, dtype=torch.float64, device="cpu"):
        super().__init__(n, L, dtype=dtype, device=device)
        self.kappa = float(kappa)

    def linear_symbol(self, k: torch.Tensor) -> torch.Tensor:
        return (-self.kappa * k ** 2).to(torch.complex128)


class Advection1D(_Linear1D):
    """Linear advection ``u_t + c u_x = 0`` on ``[0, L)``: symbol ``λ = −i c k``.

    The solution is the shift ``u(x − ct)`` of the trigonometric interpolant of ``u0``, except its
    Nyquist mode, which (as for every odd derivative here) is held fixed instead of moving.

    Parameters
    ----------
    n, L : grid points and domain length.
    c : velocity.
    dtype, device : as :class:`~neuropde.pde.etdrk4.SemilinearSpectral1D`.
    """

    def __init__(self, n: int, L: float, c: float, dtype=torch.float64, device="cpu"):
        super().__init__(n, L, dtype=dtype, device=device)
        self.c = float(c)

    def linear_symbol(self, k: torch.Tensor) -> torch.Tensor:
        k = self._odd(k)
        return torch.complex(torch.zeros_like(k), -self.c * k)


class _Cubic1D(SemilinearSpectral1D):
    """Adds :meth:`_cube_hat`, the alias-free spectrum of ``u³``."""

    def _cube_hat(self, u_hat: torch.Tensor) -> torch.Tensor:
        """Spectrum of ``u³`` with no aliasing: (..., K) -> (..., K), K = n // 2 + 1.

        Modes ``|j| < n/2`` cube to ``|j| < 3n/2``; on ``m = 2n`` points a mode ``j`` aliases to
        ``j − m``, which stays outside the retained band. The Nyquist mode is left out of the
        factor and the result (at even n it is the one mode whose ± pair cannot be told apart).
        """
        n, K = self.n, self.n // 2 + 1
        keep = K - 1 if n % 2 == 0 else K
        m = 2 * n
        # irfft zero-pads the spectrum to m points; m / n undoes the change of FFT normalisation
        u = torch.fft.irfft(u_hat[..., :keep], n=m) * (m / n)
        cube = torch.fft.rfft(u ** 3)[..., :keep] * (n / m)
        return torch.cat([cube, cube.new_zeros(cube.shape[:-1] + (K - keep,))], dim=-1)


class FisherKPP1D(SemilinearSpectral1D):
    """Fisher–KPP ``u_t = D u_xx + r u (1 − u)`` on ``[0, L)``.

    ``𝓛`` has symbol ``λ = r − D k²`` (the linearisation about the unstable state ``u = 0``, so
    early growth is exact) and ``𝓝(u) = −r u²`` (dealiased by the 2/3 rule). Fronts into ``u = 0``
    travel at ``2√(Dr)`` and are ``~√(D/r)`` wide.

    Parameters
    ----------
    n, L : grid points and domain length.
    D : diffusivity; r : growth rate.
    dtype, device : as :class:`~neuropde.pde.etdrk4.SemilinearSpectral1D`.
    """

    def __init__(self, n: int, L: float, D: float, r: float, dtype=torch.float64, device="cpu"):
        super().__init__(n, L, dtype=dtype, device=device)
        self.D, self.r = float(D), float(r)

    def linear_symbol(self, k: torch.Tensor) -> torch.Tensor:
        return (self.r - self.D * k ** 2).to(torch.complex128)

    def nonlinear_hat(self, u_hat: torch.Tensor) -> torch.Tensor:
        return -self.r * self._square_hat(u_hat)


class AllenCahn1D(_Cubic1D):
    """Allen–Cahn ``u_t = ε² u_xx + u − u³`` on ``[0, L)``.

    ``λ = 1 − ε² k²`` and ``𝓝(u) = −u³`` (alias-free). The phases ``u = ±1`` are separated by
    stationary fronts ``tanh(x / (√2 ε))``; in 1-D they then coarsen only exponentially slowly.

    Parameters
    ----------
    n, L : grid points and domain length.
    eps : interface parameter ``ε``.
    dtype, device : as :class:`~neuropde.pde.etdrk4.SemilinearSpectral1D`.
    """

    def __init__(self, n: int, L: float, eps: float, dtype=torch.float64, device="cpu"):
        super().__init__(n, L, dtype=dtype, device=device)
        self.eps = float(eps)

    def linear_symbol(self, k: torch.Tensor) -> torch.Tensor:
        return (1.0 - self.eps ** 2 * k ** 2).to(torch.complex128)

    def nonlinear_hat(self, u_hat: torch.Tensor) -> torch.Tensor:
        return -self._cube_hat(u_hat)


class CahnHilliard1D(_Cubic1D):
    """Cahn–Hilliard ``u_t = ∂x² (u³ − u − γ u_xx)`` on ``[0, L)``.

    With ``∂x² → −k²``: ``λ = k² − γ k⁴`` (long waves ``k² < 1/γ`` grow: spinodal decomposition,
    fastest at ``k² = 1/(2γ)`` with rate ``1/(4γ)``) and ``𝓝(u) = ∂x²(u³)`` (alias-free cube).
    The mean of u is conserved and the energy
    ``∫ γ/2 u_x² + (u² − 1)²/4 dx`` (:meth:`energy`) does not increase.

    Parameters
    ----------
    n, L : grid points and domain length.
    gamma : ``γ = ε²``, the squared interface parameter.
    dtype, device : as :class:`~neuropde.pde.etdrk4.SemilinearSpectral1D`.
    """

    def __init__(self, n: int, L: float, gamma: float, dtype=torch.float64, device="cpu"):
        super().__init__(n, L, dtype=dtype, device=device)
        self.gamma = float(gamma)

    def linear_symbol(self, k: torch.Tensor) -> torch.Tensor:
        return (k ** 2 - self.gamma * k ** 4).to(torch.complex128)

    def nonlinear_hat(self, u_hat: torch.Tensor) -> torch.Tensor:
        return -self.k ** 2 * self._cube_hat(u_hat)

    def energy(self, u: torch.Tensor) -> torch.Tensor:
        """Ginzburg–Landau energy ``∫ γ/2 u_x² + (u² − 1)²/4 dx`` of fields (..., n) -> (...)."""
        u_x = self.to_physical(self._dx_hat(self.to_spectral(u)))
        dx = self.L / self.n
        return dx * (0.5 * self.gamma * u_x ** 2 + 0.25 * (u ** 2 - 1) ** 2).sum(-1)
