"""2-D diffusion ``u_t = D Δu`` with zero Dirichlet data, by explicit finite differences.

The data set of Φ-ROM (arXiv 2505.14595): Gaussian bumps diffusing on a square of 40² cells
surrounded by one layer of boundary cells held at zero (42² in all), ``D = 2``, ``dx = 1``,
``dt = 0.1``, 200 steps. Φ-ROM differentiates through one step of the same scheme to get the
decoded field's time derivative, so :meth:`Diffusion2D.step` is a plain autograd-friendly map.

Scheme: forward Euler in time and the 5-point Laplacian in space (FTCS), first order in time and
second in space, stable for ``dt ≤ dx² / (4D)``. Its discrete eigenmodes are
``sin(π p i / (n−1)) sin(π q j / (n−1))``, ``p, q = 1 .. n−2``, each multiplied per step by
``1 − (4 D dt / dx²) [sin²(π p / 2(n−1)) + sin²(π q / 2(n−1))]``.

Fields are shaped ``(..., n, n)`` with axis order ``(..., x, y)``, boundary cells included.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

__all__ = ["Diffusion2D", "gaussian_initial_condition"]


def _pad(interior: torch.Tensor) -> torch.Tensor:
    """Surround (..., m, m) with one layer of zeros: (..., m + 2, m + 2)."""
    return F.pad(interior, (1, 1, 1, 1))


class Diffusion2D:
    """Batched explicit finite-difference solver for ``u_t = D Δu`` with a zero boundary layer.

    The outer ring of cells is the Dirichlet boundary: it holds zero, whatever the input has
    there (a decoded field need not vanish on it, and the data never has anything else). Works in
    the input's dtype and on its device; it holds no tensors.

    Parameters
    ----------
    n : cells per side, boundary included (``42`` = 40 interior + 2 boundary in the reference).
    D : diffusivity.
    dx : cell size.
    """

    def __init__(self, n: int = 42, D: float = 2.0, dx: float = 1.0):
        if n < 3:
            raise ValueError(f"n must be at least 3 (one interior cell inside the boundary layer), got {n}")
        if not D > 0 or not dx > 0:
            raise ValueError(f"D and dx must be positive, got D={D}, dx={dx}")
        self.n, self.D, self.dx = int(n), float(D), float(dx)

    @property
    def stable_dt(self) -> float:
        """Largest stable step ``dx² / (4D)``: the checkerboard mode's factor reaches −1 there."""
        return self.dx ** 2 / (4 * self.D)

    def grid(self, dtype=torch.float64, device="cpu") -> torch.Tensor:
        """Cell centres along one side, centred on 0 (interior at ±19.5 for the reference): (n,)."""
        return (torch.arange(self.n, dtype=dtype, device=device) - (self.n - 1) / 2) * self.dx

    def _check(self, u: torch.Tensor, dt: float | None = None) -> None:
        if u.dim() < 2 or tuple(u.shape[-2:]) != (self.n, self.n):
            raise ValueError(f"u must be (B, {self.n}, {self.n}) (boundary cells included), got "
                             f"{tuple(u.shape)}")
        if dt is not None and not 0 < dt <= self.stable_dt:
            raise ValueError(f"dt={dt} is outside the explicit scheme's stability range 0 < dt <= "
                             f"dx²/(4D) = {self.stable_dt:.6g} (dx={self.dx}, D={self.D}); "
                             f"use dt <= {self.stable_dt:.6g}")

    def apply_boundary(self, u: torch.Tensor) -> torch.Tensor:
        """u (..., n, n) with the boundary ring set to zero (out of place, differentiable)."""
        return _pad(u[..., 1:-1, 1:-1])

    def time_derivative(self, u: torch.Tensor) -> torch.Tensor:
        """Semi-discrete right-hand side ``D Δ_h u`` (5-point), zero on the boundary ring.

        The boundary of u is read as zero. (..., n, n) -> (..., n, n); differentiable.
        """
        self._check(u)
        p = self.apply_boundary(u)
        lap = (p[..., 2:, 1:-1] + p[..., :-2, 1:-1] + p[..., 1:-1, 2:] + p[..., 1:-1, :-2]
               - 4 * p[..., 1:-1, 1:-1]) / self.dx ** 2
        return _pad(self.D * lap)

    __call__ = time_derivative  # like the nn.Module solvers, whose forward is the right-hand side

    def step(self, u: torch.Tensor, dt: float) -> torch.Tensor:
        """One forward-Euler step: u (B, n, n) -> (B, n, n), zero on the boundary; differentiable.

        So ``(step(u, dt) − u) / dt`` is :meth:`time_derivative` in the interior and ``−u / dt`` on
        the boundary ring (zero for fields that satisfy the boundary condition).
        """
        self._check(u, dt)
        return self.apply_boundary(u) + dt * self.time_derivative(u)

    def simulate(self, u0: torch.Tensor, dt: float, n_steps: int, record_every: int = 1,
                 progress: bool = False) -> torch.Tensor:
        """Integrate ``n_steps`` steps and record every ``record_every``-th state.

        Parameters
        ----------
        u0 : Tensor (B, n, n) or (n, n), initial field; its boundary ring is set to zero.
        dt : time step, at most :attr:`stable_dt`.
        n_steps : number of steps (200 for ``T = 20`` at ``dt = 0.1``).
        record_every : steps between records; must divide ``n_steps`` so that the final state
            is recorded.
        progress : show a tqdm bar over steps.

        Returns
        -------
        Tensor (B, n_steps // record_every + 1, n, n): u0 (with its boundary zeroed), then the
        recorded states.
        """
        if u0.dim() == 2:
            u0 = u0[None]
        self._check(u0, dt)
        if u0.dim() != 3:
            raise ValueError(f"u0 must be (B, {self.n}, {self.n}) or ({self.n}, {self.n}), "
                             f"got {tuple(u0.shape)}")
        if n_steps < 0 or record_every < 1 or n_steps % record_every:
            raise ValueError(f"record_every={record_every} must be >= 1 and divide n_steps={n_steps}")
        u = self.apply_boundary(u0)
        frames = [u]
        for i in tqdm(range(1, n_steps + 1), disable=not progress, desc="diffusion"):
            u = self.step(u, dt)
            if i % record_every == 0:
                frames.append(u)
        return torch.stack(frames, dim=1)


def gaussian_initial_condition(batch: int, n: int = 42, generator: torch.Generator | None = None, *,
                               sigma: tuple[float, float] = (3.0, 10.0), max_shift: int = 12,
                               amplitude: tuple[float, float] = (0.5, 2.0), dx: float = 1.0,
                               dtype=torch.float64, device="cpu") -> torch.Tensor:
    """Random Gaussian bumps ``a exp(−|x − c|² / 2σ²)`` inside a zero boundary ring.

    As in the reference data: ``σ ~ U[3, 10]``, centre ``c`` with integer coordinates uniform in
    ``[−max_shift, max_shift]`` (both ends included), ``a ~ U[0.5, 2]``, on the cell centres of
    :meth:`Diffusion2D.grid` (interior at ``−19.5 .. 19.5`` for ``n = 42``). Wide bumps are far
    from zero at the edge of the interior (up to ~0.7 a); the boundary ring is set to zero anyway,
    as the reference does by padding.

    Parameters
    ----------
    batch, n : number of fields, cells per side (boundary included).
    generator : CPU ``torch.Generator``; everything is drawn from it on CPU in float64, in the order
        σ, centre, amplitude.
    sigma, max_shift, amplitude : the ranges above.
    dx : cell size.

    Returns
    -------
    Tensor (batch, n, n).
    """
    lo, hi = sigma
    s = lo + (hi - lo) * torch.rand(batch, generator=generator, dtype=torch.float64)
    c = torch.randint(-max_shift, max_shift + 1, (batch, 2), generator=generator).to(torch.float64)
    lo, hi = amplitude
    a = lo + (hi - lo) * torch.rand(batch, generator=generator, dtype=torch.float64)
    x = Diffusion2D(n, dx=dx).grid()
    dist2 = (x[:, None] - c[:, 0, None, None]) ** 2 + (x[None, :] - c[:, 1, None, None]) ** 2
    u = a[:, None, None] * torch.exp(-dist2 / (2 * s[:, None, None] ** 2))
    return _pad(u[:, 1:-1, 1:-1]).to(device=device, dtype=dtype)
