"""PDE residual of a vorticity trajectory, for a-posteriori error estimates and physics losses.

For 2D Navier–Stokes in vorticity form the residual of a trajectory ``ω(t)`` is

    R = ∂ₜω − (−u·∇ω + νΔω + f),

and its Bochner norm ``‖R‖_{L²(0,T;H⁻¹)}`` bounds the error of ``ω`` (Spectral-Refiner, §2.6 of
the reference notes). ``∂ₜω`` is taken by finite differences across the trajectory's own frames.
Taking it from the PDE instead (as the reference code does, by one tiny solver step per frame)
makes ``R`` vanish up to the solver's step error for *any* field, so the "residual" no longer
measures anything (pitfall 1 of the notes). The spatial operator is the solver's own
:meth:`NavierStokes2D.time_derivative`, so a trajectory produced by that solver has a residual
limited only by the time steps (its internal one and the frame spacing).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch

from neuropde.losses import sobolev_norm
from neuropde.pde.navier_stokes import NavierStokes2D, make_forcing

__all__ = ["fd_weights", "time_derivative_matrix", "time_derivative", "navier_stokes_residual",
           "residual_norm", "solver_for", "solver_for_data"]


def fd_weights(offsets: Sequence[float], order_deriv: int = 1) -> torch.Tensor:
    """Finite-difference weights of the ``order_deriv``-th derivative at 0 on an arbitrary stencil.

    Fornberg's recursion (Math. Comp. 51, 1988): the weights of all derivatives up to
    ``order_deriv`` are built node by node, each new node updating the Lagrange-interpolant
    weights of the previous ones, which is stable and needs no linear solve.

    Parameters
    ----------
    offsets : the P distinct stencil points, relative to the evaluation point, in units of the
        grid step (so divide the result by ``h**order_deriv``).
    order_deriv : derivative order, ``0 <= order_deriv < P``.

    Returns
    -------
    Tensor (P,), float64 : ``f^(m)(0) ≈ Σ_j w_j f(offsets_j)``, exact for polynomials of degree
    ``< P``.
    """
    x = [float(o) for o in offsets]
    p, m_max = len(x), int(order_deriv)
    if len(set(x)) != p:
        raise ValueError(f"stencil offsets must be distinct, got {list(offsets)}")
    if not 0 <= m_max < p:
        raise ValueError(f"a {p}-point stencil gives derivatives of order 0..{p - 1}, "
                         f"not {order_deriv}; add points to the stencil")
    # c[j][m]: weight of node j for the m-th derivative, using the nodes seen so far
    c = [[0.0] * (m_max + 1) for _ in range(p)]
    c[0][0] = 1.0
    prod_old = 1.0  # Π_{k<i-1} (x_{i-1} − x_k): the new node's normalisation carries it over
    for i in range(1, p):
        prod = 1.0
        for j in range(i):
            diff = x[i] - x[j]
            prod *= diff
            if j == i - 1:
                # the new node i, from the old weights of node i-1 (before they are updated below)
                for m in range(min(i, m_max), 0, -1):
                    c[i][m] = prod_old * (m * c[i - 1][m - 1] - x[i - 1] * c[i - 1][m]) / prod
                c[i][0] = -prod_old * x[i - 1] * c[i - 1][0] / prod
            # the old nodes: descending m so c[j][m - 1] is still the previous stage's value
            for m in range(min(i, m_max), 0, -1):
                c[j][m] = (x[i] * c[j][m] - m * c[j][m - 1]) / diff
            c[j][0] = x[i] * c[j][0] / diff
        prod_old = prod
    return torch.tensor([row[m_max] for row in c], dtype=torch.float64)


def time_derivative_matrix(T: int, dt: float, accuracy: int = 4, *, dtype=torch.float64,
                           device=None) -> torch.Tensor:
    """The (T, T) first-derivative matrix on T equally spaced frames.

    Row ``i`` holds an ``accuracy + 1``-point stencil: centred on frame ``i`` where it fits,
    shifted to stay inside ``0..T-1`` near the ends (one-sided at the first and last frame), so
    every row is ``O(dt^accuracy)``. For odd ``accuracy`` the interior stencil leans one frame
    forward, since an even number of points cannot be centred on a frame.

    Returns
    -------
    Tensor (T, T) in ``dtype`` on ``device``.
    """
    accuracy = int(accuracy)
    if accuracy < 1:
        raise ValueError(f"accuracy must be >= 1, got {accuracy}")
    p = accuracy + 1
    if T < p:
        raise ValueError(f"a time derivative of accuracy {accuracy} needs at least accuracy + 1 = {p} "
                         f"frames, got T = {T}; pass more frames or lower accuracy (at most {T - 1})")
    D = torch.zeros(T, T, dtype=torch.float64)
    for i in range(T):
        start = min(max(i - accuracy // 2, 0), T - p)
        D[i, start:start + p] = fd_weights([j - i for j in range(start, start + p)])
    # built in float64 and cast once, so float32 trajectories get correctly rounded weights
    return (D / dt).to(dtype=dtype, device=device)


def time_derivative(traj: torch.Tensor, dt: float, accuracy: int = 4) -> torch.Tensor:
    """``∂ₜ`` of a trajectory along axis 1, by finite differences across its frames.

    Parameters
    ----------
    traj : Tensor (B, T, *space), frames equally spaced by ``dt``; ``T >= accuracy + 1``.
    dt : time between consecutive frames.
    accuracy : order of the error, ``O(dt^accuracy)`` at every frame (ends included).

    Returns
    -------
    Tensor (B, T, *space), same dtype and device; differentiable with respect to ``traj``.
    """
    if traj.dim() < 2:
        raise ValueError(f"traj must be (B, T, *space), got shape {tuple(traj.shape)}")
    D = time_derivative_matrix(traj.shape[1], dt, accuracy, dtype=traj.dtype, device=traj.device)
    return torch.einsum("st,bt...->bs...", D, traj)


def navier_stokes_residual(traj: torch.Tensor, dt: float, solver: NavierStokes2D,
                           accuracy: int = 4) -> torch.Tensor:
    """Pointwise residual ``R = ∂ₜω − (−u·∇ω + νΔω + f)`` of a vorticity trajectory.

    Parameters
    ----------
    traj : Tensor (B, T, n, n), vorticity frames equally spaced by ``dt`` (``T >= accuracy + 1``).
    dt : time between frames.
    solver : the :class:`NavierStokes2D` whose ``n``, ``L``, ``ν`` and forcing define the PDE;
        its ``time_derivative`` gives the spatial operator.
    accuracy : order of the finite-difference ``∂ₜω`` (see :func:`time_derivative`).

    Returns
    -------
    Tensor (B, T, n, n) in the solver's dtype, on its device; differentiable.
    """
    if traj.dim() != 4 or tuple(traj.shape[-2:]) != (solver.n, solver.n):
        raise ValueError(f"traj must be (B, T, {solver.n}, {solver.n}) for this solver, "
                         f"got {tuple(traj.shape)}")
    # one precision for both terms: they nearly cancel, so mixing float32 in would set the floor
    w = traj.to(dtype=solver.dtype, device=solver.device)
    return time_derivative(w, dt, accuracy) - solver.time_derivative(w)


def residual_norm(R: torch.Tensor, L: float = 1.0, s: float = -1.0, dt: float = 1.0) -> torch.Tensor:
    """Bochner norm ``‖R‖_{L²(0,T;H^s)} = (dt Σ_t ‖R_t‖²_{H^s})^{1/2}`` per trajectory.

    Parameters
    ----------
    R : Tensor (B, T, n, n), e.g. from :func:`navier_stokes_residual`.
    L : domain side.
    s : Sobolev exponent; ``-1`` is the dual norm of the a-posteriori bound.
    dt : time between frames (the quadrature weight in time).

    Returns
    -------
    Tensor (B,) : weights ``(1 + 4π²|k|²/L²)^s``, as :func:`neuropde.losses.sobolev_norm`.
    """
    return sobolev_norm(R, s, L, ndim=2, dt=dt)


def solver_for(n: int, L: float = 1.0, nu: float = 1e-3, forcing: str = "fno", dtype=torch.float64,
               device="cpu", kolmogorov_k: int = 4) -> NavierStokes2D:
    """The :class:`NavierStokes2D` of a data setting, forcing given by name.

    Parameters
    ----------
    n : grid points per side of the trajectories the residual will be taken of.
    L, nu : domain side and viscosity.
    forcing : ``"fno"``, ``"kolmogorov"`` (wavenumber ``kolmogorov_k``) or ``"none"``.
    dtype, device : the solver's precision and placement (float64 for residuals near round-off).

    Returns
    -------
    NavierStokes2D on an n×n grid.
    """
    kw = {"k": int(kolmogorov_k)} if forcing == "kolmogorov" else {}
    f = make_forcing(forcing, n, L, dtype=dtype, device=device, **kw)
    return NavierStokes2D(n, L=L, nu=nu, forcing=f, dtype=dtype, device=device)


def solver_for_data(data_cfg: Mapping, n: int | None = None, dtype=torch.float64,
                    device="cpu") -> NavierStokes2D:
    """:func:`solver_for` with the settings of a data config (the ``data`` group, e.g. ns2d.yaml).

    Parameters
    ----------
    data_cfg : mapping with ``resolution`` and a ``generator`` block holding ``L``, ``nu``,
        ``forcing`` and optionally ``kolmogorov_k``.
    n : grid size; defaults to the stored ``resolution``.
    """
    g = data_cfg["generator"]
    return solver_for(int(n if n is not None else data_cfg["resolution"]), float(g["L"]),
                      float(g["nu"]), str(g["forcing"]), dtype, device,
                      int(g.get("kolmogorov_k", 4)))
