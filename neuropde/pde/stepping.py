"""The time derivative a numerical solver assigns to a field: ``r = (S_dt(u) − u) / dt``.

Φ-ROM (arXiv 2505.14595) decodes a field from a latent, advances it by one differentiable solver
step and uses this finite difference as the field's time derivative, which its latent dynamics
are then fitted to. Using the data's own solver (same discretisation and dt) makes r the exact
velocity of the discrete system that generated the data; as ``dt → 0`` it tends to the PDE's
right-hand side to first order (``r = f(u) + ½ dt f'(u) f(u) + O(dt²)``).
"""
from __future__ import annotations

import torch

from neuropde.pde.etdrk4 import SemilinearSpectral1D

__all__ = ["solver_time_derivative"]


def solver_time_derivative(solver, u: torch.Tensor, dt: float, n_steps: int = 1) -> torch.Tensor:
    """``(S_dt^m(u) − u) / (m dt)`` in physical space, differentiable with respect to u.

    Parameters
    ----------
    solver : a solver with ``step(state, dt)`` and ``n``. Spectral solvers
        (:class:`~neuropde.pde.etdrk4.SemilinearSpectral1D` subclasses such as
        :class:`~neuropde.pde.burgers.Burgers1D`, and :class:`~neuropde.pde.navier_stokes.NavierStokes2D`)
        also have ``to_spectral``/``to_physical`` and step the spectrum; others
        (:class:`~neuropde.pde.diffusion.Diffusion2D`) step the field itself.
    u : Tensor (B, n) for 1-D solvers, (B, n, n) for 2-D ones (vorticity for Navier–Stokes); any
        number of leading dimensions works. Spectral solvers cast it to their dtype and device.
    dt : the solver step (use the data's, so that r is the velocity of the data's discrete system).
    n_steps : solver steps m (the reference takes several for NS and LBM snapshots).

    Returns
    -------
    Tensor shaped like u (in the solver's dtype for spectral solvers). In float32 the difference
    loses about ``eps · |u| / dt`` to cancellation.
    """
    dt = float(dt)
    if not dt > 0:
        raise ValueError(f"dt must be a positive time step, got {dt}")
    if n_steps < 1:
        raise ValueError(f"n_steps must be at least 1, got {n_steps}")
    if not hasattr(solver, "step"):
        raise TypeError(f"{type(solver).__name__} has no step(state, dt); pass a neuropde.pde solver")
    dims = 1 if isinstance(solver, SemilinearSpectral1D) else 2
    if u.dim() < dims or tuple(u.shape[-dims:]) != (solver.n,) * dims:
        want = "(B, n)" if dims == 1 else "(B, n, n)"
        raise ValueError(f"u must be {want} with n={solver.n} for {type(solver).__name__}, got "
                         f"{tuple(u.shape)}; resample it or build the solver with that n")
    spectral = hasattr(solver, "to_spectral")
    if spectral:
        u = u.to(device=solver.device, dtype=solver.dtype)
    state = solver.to_spectral(u) if spectral else u
    for _ in range(n_steps):
        state = solver.step(state, dt)
    u_next = solver.to_physical(state) if spectral else state
    return (u_next - u) / (n_steps * dt)
