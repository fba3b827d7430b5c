"""Steady Darcy flow −∇·(a∇u) = f on the unit square with u = 0 on the boundary (FNO benchmark).

Grid convention (that of the FNO benchmark's 421², 241², 85² data): an ``s × s`` grid of nodes
``x_i = i h``, ``h = 1/(s−1)``, ``i = 0..s−1``, *including* the boundary nodes, whose values are
stored as 0. Array axis −2 is ``x``, axis −1 is ``y`` (``indexing="ij"``).

Discretisation: cell-centred-on-nodes finite volumes (equivalently the 5-point scheme in
conservation form). Around interior node P the flux through the east face is
``a_e (u_E − u_P)/h`` and so on, giving

    (1/h²) [a_e (u_P − u_E) + a_w (u_P − u_W) + a_n (u_P − u_N) + a_s (u_P − u_S)] = f_P.

Face coefficients are the *harmonic* mean of the two nodal values, ``2 a_P a_E / (a_P + a_E)``:
it is the exact effective conductivity of two resistors in series, so a face between a 12 and a 3
node conducts like the layered medium it is (the arithmetic mean would let flux leak across the
low-permeability side). For smooth ``a`` it differs from ``a`` at the face midpoint by O(h²), so
the scheme is second order on a smooth coefficient (checked in tests/test_darcy.py). On the
data set's thresholded coefficient it is not: the 12/3 interface is a curve that the grid does not
follow and the coefficient is sampled at the nodes, so the interface moves by O(h) from one grid
to the next. Measured against a 1025² reference solution at common nodes (experiments/darcy),
the relative error falls like h^1.2 in the discrete L2 norm (first order), h^0.46 in the discrete
H1 seminorm (order ½ in the gradient) and h^0.76 in the max norm (tested at smaller sizes). The matrix is symmetric positive definite; it is
assembled with scipy.sparse for the ``(s−2)²`` interior nodes and factorised by SuperLU
(``spsolve``) once per sample.

Coefficients: a Gaussian random field with covariance ∝ (−Δ + τ²)^(−α) (α = 2, τ = 3 in the
benchmark), thresholded to ``a_high`` (12) where it is ≥ 0 and ``a_low`` (3) where it is < 0.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

__all__ = ["solve_darcy", "darcy_grf", "darcy_coefficient", "darcy_grid", "nodal_errors"]


def darcy_grid(s: int) -> tuple[np.ndarray, np.ndarray]:
    """Node coordinates of the ``s × s`` grid (boundary included): X, Y each (s, s), float64."""
    x = np.linspace(0.0, 1.0, s)
    return np.meshgrid(x, x, indexing="ij")


def _assemble(a: np.ndarray) -> sp.csc_matrix:
    """Matrix of −∇·(a∇·) on the interior nodes of an (s, s) nodal coefficient: ((s−2)², (s−2)²).

    Interior node (i, j), i, j = 1..s−2, has row ``p = (i−1) n + (j−1)`` with ``n = s − 2``, so
    x-neighbours are ``n`` rows apart and y-neighbours one row apart.
    """
    s = a.shape[-1]
    n = s - 2
    h2 = (1.0 / (s - 1)) ** 2
    # face coefficients: ax[i, j] between nodes (i, j) and (i+1, j); ay[i, j] between (i, j) and (i, j+1)
    ax = 2 * a[:-1, :] * a[1:, :] / (a[:-1, :] + a[1:, :])
    ay = 2 * a[:, :-1] * a[:, 1:] / (a[:, :-1] + a[:, 1:])
    # diagonal: sum of the four faces of each interior node (boundary faces included: u_boundary = 0);
    # ax is (s−1, s), so the east faces of rows i = 1..s−2 are ax[1:], the west faces ax[:-1]
    diag = ax[1:, 1:-1] + ax[:-1, 1:-1] + ay[1:-1, 1:] + ay[1:-1, :-1]
    # (i, j) -- (i+1, j) for i = 1..s−3: contiguous rows 0..(n−1)n−1, offset n
    off_x = -ax[1:-1, 1:-1].ravel()
    # (i, j) -- (i, j+1): the last column's neighbour is a boundary node, so no coupling across rows
    off_y = -ay[1:-1, 1:].copy()
    off_y[:, -1] = 0.0
    off_y = off_y.ravel()[:-1]
    mat = sp.diags([diag.ravel(), off_y, off_y, off_x, off_x], [0, 1, -1, n, -n], shape=(n * n, n * n),
                   format="csc")
    return mat / h2


def _solve_one(a: np.ndarray, f: np.ndarray) -> np.ndarray:
    """One sample: a (s, s), f (s, s) nodal -> u (s, s) with zero boundary."""
    s = a.shape[-1]
    u = np.zeros((s, s))
    if s < 3:
        return u
    rhs = f[1:-1, 1:-1].ravel()
    u[1:-1, 1:-1] = spla.spsolve(_assemble(a), rhs).reshape(s - 2, s - 2)
    return u


def solve_darcy(a, f=1.0):
    """Solve −∇·(a∇u) = f on (0,1)², u = 0 on the boundary, on the nodes of ``a``'s grid.

    Parameters
    ----------
    a : ndarray or Tensor, (s, s) or (B, s, s): positive nodal coefficient, boundary nodes
        included (the boundary values enter the faces next to the boundary).
    f : float, or array/Tensor broadcastable to ``a``'s shape: nodal right-hand side (only its
        interior values are used).

    Returns
    -------
    u : float64, same shape as ``a``, zero on the boundary; a Tensor (on ``a``'s device) if ``a``
        is a Tensor, else an ndarray.
    """
    is_tensor = isinstance(a, torch.Tensor)
    device = a.device if is_tensor else None
    a_np = a.detach().cpu().double().numpy() if is_tensor else np.asarray(a, dtype=np.float64)
    if isinstance(f, torch.Tensor):
        f = f.detach().cpu().double().numpy()
    if a_np.ndim not in (2, 3) or a_np.shape[-1] != a_np.shape[-2]:
        raise ValueError(f"a must be (s, s) or (B, s, s); got shape {a_np.shape}")
    if np.any(a_np <= 0):
        raise ValueError("the coefficient a must be positive")
    f_np = np.broadcast_to(np.asarray(f, dtype=np.float64), a_np.shape)
    if a_np.ndim == 2:
        u = _solve_one(a_np, f_np)
    else:
        u = np.stack([_solve_one(ai, fi) for ai, fi in zip(a_np, f_np)])
    return torch.from_numpy(u).to(device) if is_tensor else u


def darcy_grf(batch: int, s: int, alpha: float = 2.0, tau: float = 3.0,
              generator: torch.Generator | None = None, ref_modes: int = 128) -> torch.Tensor:
    """Zero-mean Gaussian random field on [0,1]² with covariance ∝ (−Δ + τ²I)^(−α), cosine series.

    Like the FNO benchmark we use the eigenfunctions of the Neumann Laplacian on the unit square,
    ``φ_k(x, y) = c_{k1}(x) c_{k2}(y)`` with ``c_0 = 1``, ``c_k = √2 cos(πkx)`` (eigenvalue
    ``π²|k|²``), rather than a periodic Fourier series: the domain is not periodic, and the cosine
    series has no preferred wrap-around. The field is
    ``Σ_{k ≠ 0} τ^(α−1) (π²|k|² + τ²)^(−α/2) ξ_k φ_k``, ``ξ_k`` standard normal, the mean mode
    dropped.

    Resolution independence: the ``ref_modes²`` coefficients are drawn from ``generator`` whatever
    ``s`` is, and the series is *evaluated pointwise* at the nodes ``i/(s−1)``; so a seed gives
    the same continuous (truncated) field at every resolution, and grids whose nodes nest
    (e.g. 421 and 85) share exactly the same values at the common nodes. With α = 2 the omitted
    modes ``|k| ≥ ref_modes`` carry O(1/ref_modes) of the field's standard deviation.

    Parameters
    ----------
    batch, s : number of fields, nodes per side (boundary included).
    alpha, tau : smoothness and inverse length scale.
    generator : CPU ``torch.Generator``; draws (batch, ref_modes, ref_modes) float64 normals.
    ref_modes : modes per direction, ``k1, k2 = 0..ref_modes−1``.

    Returns
    -------
    Tensor (batch, s, s), float64, CPU.
    """
    xi = torch.randn(batch, ref_modes, ref_modes, generator=generator, dtype=torch.float64)
    k = torch.arange(ref_modes, dtype=torch.float64)
    lam = math.pi ** 2 * (k[:, None] ** 2 + k[None, :] ** 2) + tau ** 2
    coef = tau ** (alpha - 1) * lam ** (-alpha / 2) * xi
    coef[:, 0, 0] = 0.0  # zero mean: the threshold then splits the square roughly in half
    x = torch.linspace(0.0, 1.0, s, dtype=torch.float64)
    basis = torch.cos(math.pi * k[:, None] * x[None, :])  # (ref_modes, s)
    basis[1:] *= math.sqrt(2.0)
    # field[b, i, j] = Σ_{k1,k2} basis[k1, i] coef[b, k1, k2] basis[k2, j]
    return torch.einsum("ki,bkl,lj->bij", basis, coef, basis)


def darcy_coefficient(s: int, seed: int, alpha: float = 2.0, tau: float = 3.0, a_high: float = 12.0,
                      a_low: float = 3.0, ref_modes: int = 128) -> np.ndarray:
    """The benchmark's piecewise-constant coefficient of one sample: (s, s) float64 ndarray.

    ``a = a_high`` where the GRF of :func:`darcy_grf` (seeded by ``seed``) is ≥ 0, else ``a_low``.
    """
    field = darcy_grf(1, s, alpha, tau, torch.Generator().manual_seed(int(seed)), ref_modes)[0].numpy()
    return np.where(field >= 0, a_high, a_low)


def nodal_errors(u: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Relative errors of a coarse nodal solution against a finer one at the coarse nodes.

    The grids nest (``ref`` has ``m (s−1) + 1`` nodes per side for ``u``'s ``s``), so ``ref`` is
    restricted by injection, ``ref[::m, ::m]``, and ``e = u − ref[::m, ::m]`` is measured on the
    coarse grid (``h = 1/(s−1)``): ``l2`` = (h² Σ e²)^½, ``h1`` the same of the difference quotients
    of ``e`` along every grid edge (a discrete H1 seminorm, i.e. the error in the gradient), ``max``
    = max |e|; each divided by the same norm of the restricted reference.

    Parameters
    ----------
    u : (s, s) nodal solution, boundary included.
    ref : (S, S) nodal solution with ``S − 1`` a multiple of ``s − 1``.

    Returns
    -------
    dict with float ``l2``, ``h1``, ``max``.
    """
    s, big = u.shape[-1], ref.shape[-1]
    m = (big - 1) // (s - 1)
    if m * (s - 1) != big - 1:
        raise ValueError(f"grids of {s} and {big} nodes per side do not nest")
    r = ref[::m, ::m]
    h = 1.0 / (s - 1)

    def norms(e):
        gx, gy = np.diff(e, axis=0) / h, np.diff(e, axis=1) / h
        return {"l2": h * np.sqrt((e ** 2).sum()), "h1": h * np.sqrt((gx ** 2).sum() + (gy ** 2).sum()),
                "max": np.abs(e).max()}

    err, scale = norms(u - r), norms(r)
    return {k: float(err[k] / scale[k]) for k in err}
