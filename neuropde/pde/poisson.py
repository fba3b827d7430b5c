"""Pressure-Poisson systems of a fluid pressure projection on a cell-centred (MAC) grid, 2-D and 3-D.

Grid
----
An ``N × N`` (2-D) or ``N × N × N`` (3-D) grid of square cells covering the unit square/cube,
``h = 1/N``; cell ``(i, j[, k])`` has its centre at ``((i + ½) h, (j + ½) h[, (k + ½) h])``. Array
axis 0 is ``x``, axis 1 ``y``, axis 2 ``z`` (``indexing="ij"``). The *last* axis points up (it is
``y`` in 2-D and ``z`` in 3-D); only :func:`smoke_like` uses that.

Cell flags (``int8``; any integer dtype is accepted)
----------------------------------------------------
======  =====  =====================================================================================
FLUID     0    an unknown pressure
SOLID     1    obstacle or wall: Neumann (∂p/∂n = 0); its faces carry no flux, it adds nothing to A
EMPTY     2    air: Dirichlet ``p = 0`` at its centre; not an unknown, but a fluid cell next to it
               counts it in its diagonal (the coupling ``−p_empty = 0`` moves to the right-hand side)
======  =====  =====================================================================================

FLUID is 0 so that ``np.zeros`` is the all-fluid box. Cells outside the grid are SOLID walls.

Matrix
------
For fluid cell ``i``: ``A_ii`` = number of non-solid (FLUID or EMPTY) face neighbours, ``A_ij = −1``
for every FLUID face neighbour ``j``. This is ``−h² ∇²`` in conservation form (the 5-/7-point
Laplacian), symmetric, an M-matrix. With ``scaled=True`` it is multiplied by ``1/h² = N²`` so that
it approximates ``−∇²`` itself; every right-hand side built here is scaled to match
(:attr:`PoissonSystem.rhs_scale`): ``b = f`` for a scaled and ``b = h² f`` for an unscaled system,
so both give the same solution ``p``.

Null space
----------
A connected fluid region (face connectivity) with no EMPTY neighbour is closed on every side by
SOLID cells or walls: its rows sum to zero, so the constant vector on that region spans a
one-dimensional null space (the region's block is a connected graph Laplacian). A region that
touches an EMPTY cell has a strictly dominant row somewhere and is positive definite. So A is
positive definite iff every fluid region touches EMPTY, and otherwise its null space is spanned by
the indicator vectors of :attr:`PoissonSystem.regions`. ``A x = b`` is solvable iff ``b`` sums to
zero over each closed region; :meth:`PoissonSystem.project_out_nullspace` enforces that, and the
returned solutions are the ones with zero mean on each closed region.

Right-hand sides
----------------
* :func:`random_rhs`: a smooth random source (a few low Fourier modes whose coefficients do not
  depend on ``N``, so one seed gives the same continuous field at every resolution) or white noise.
* :func:`divergence_rhs`: the projection step itself. A smooth random velocity ``u*`` on the MAC
  faces (normal component zero on every face that touches SOLID or the domain boundary: walls and
  obstacles at rest) gives ``b = −∇·u*`` on fluid cells; then ``u = u* − ∇p`` (see
  :func:`subtract_pressure_gradient`) is discretely divergence free on every fluid cell. On a
  closed region the divergence sums to zero exactly (the boundary fluxes are zero), so ``b`` is
  compatible by construction.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.ndimage as ndi
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

__all__ = [
    "FLUID", "SOLID", "EMPTY", "PoissonSystem", "assemble", "cell_centres",
    "empty_box", "box_with_obstacles", "smoke_like",
    "random_rhs", "smooth_random_field", "random_mac_velocity", "mac_divergence",
    "divergence_rhs", "subtract_pressure_gradient", "solve_direct",
]

FLUID, SOLID, EMPTY = 0, 1, 2
_FLAG_NAMES = {FLUID: "FLUID", SOLID: "SOLID", EMPTY: "EMPTY"}


# --------------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------------
def _check_flags(flags) -> np.ndarray:
    """Validated copy of a flag grid as int8 (N, N) or (N, N, N)."""
    flags = np.asarray(flags)
    if not np.issubdtype(flags.dtype, np.integer):
        raise ValueError(f"flags must be an integer array (FLUID={FLUID}, SOLID={SOLID}, EMPTY={EMPTY}); "
                         f"got dtype {flags.dtype}: convert with flags.astype(np.int8)")
    if flags.ndim not in (2, 3):
        raise ValueError(f"flags must be (N, N) or (N, N, N); got shape {flags.shape}")
    if len(set(flags.shape)) != 1 or flags.shape[0] < 1:
        raise ValueError(f"flags must be a square/cubic grid (h = 1/N on every axis); got shape {flags.shape}")
    bad = ~np.isin(flags, list(_FLAG_NAMES))
    if bad.any():
        values = np.unique(flags[bad])[:5].tolist()
        raise ValueError(f"unknown flag values {values}: use FLUID={FLUID}, SOLID={SOLID}, EMPTY={EMPTY}")
    if not (flags == FLUID).any():
        raise ValueError("flags contain no FLUID cell, so the system has no unknowns")
    return flags.astype(np.int8, copy=True)


def _check_grid(N: int, dim: int) -> tuple[int, int]:
    if int(dim) not in (2, 3):
        raise ValueError(f"dim must be 2 or 3; got {dim}")
    if int(N) < 2:
        raise ValueError(f"N must be at least 2; got {N}")
    return int(N), int(dim)


def _rng(rng) -> np.random.Generator:
    """A Generator from a Generator or an integer seed (``None`` is refused: domains must be reproducible)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        raise ValueError("pass an np.random.Generator or an integer seed (rng=None is not reproducible)")
    return np.random.default_rng(int(rng))


def _shift(a: np.ndarray, axis: int, step: int, fill) -> np.ndarray:
    """``out[i] = a[i + step]`` along ``axis`` (step ±1), ``fill`` where ``i + step`` leaves the grid."""
    out = np.full_like(a, fill)
    src = [slice(None)] * a.ndim
    dst = [slice(None)] * a.ndim
    if step > 0:
        src[axis], dst[axis] = slice(step, None), slice(None, -step)
    else:
        src[axis], dst[axis] = slice(None, step), slice(-step, None)
    out[tuple(dst)] = a[tuple(src)]
    return out


# --------------------------------------------------------------------------------------------------
# the system
# --------------------------------------------------------------------------------------------------
@dataclass
class PoissonSystem:
    """A pressure-Poisson matrix on the fluid cells of a flag grid; build it with :func:`assemble`.

    Attributes
    ----------
    flags : int8 (N, N) or (N, N, N), a private copy of the cell flags.
    index : int64, same shape: unknown number of each FLUID cell, −1 for SOLID and EMPTY cells.
        Unknowns are numbered in C (row-major) order of the grid.
    cells : int64 (n,): flat grid index of each unknown (``index.ravel()[cells] == arange(n)``).
    scaled : whether A (and every right-hand side made here) carries the factor ``1/h²``.
    regions : list of int64 arrays, one per *closed* fluid region (no EMPTY neighbour), holding
        its unknown numbers; each spans one null-space vector (the constant on the region).
    region_of : int64 (n,): position in ``regions`` of each unknown's region, −1 where the region
        touches EMPTY (no null space there).
    """

    flags: np.ndarray
    index: np.ndarray
    cells: np.ndarray
    scaled: bool
    regions: list
    region_of: np.ndarray
    _matrix: sp.csr_matrix = field(repr=False)
    _labels: dict = field(default_factory=dict, repr=False, compare=False)  # device -> (label, counts)

    # --- sizes ---------------------------------------------------------------------------------
    @property
    def n(self) -> int:
        """Number of unknowns (FLUID cells)."""
        return int(self.cells.size)

    @property
    def N(self) -> int:
        """Cells per side."""
        return int(self.flags.shape[0])

    @property
    def dim(self) -> int:
        return int(self.flags.ndim)

    @property
    def h(self) -> float:
        """Cell size ``1/N``."""
        return 1.0 / self.N

    @property
    def rhs_scale(self) -> float:
        """Factor from a continuous source ``f`` (of ``−∇²p = f``) to ``b``: 1 if scaled, ``h²`` if not."""
        return 1.0 if self.scaled else self.h ** 2

    @property
    def is_singular(self) -> bool:
        """True when some fluid region is closed (pure Neumann), i.e. A has a null space."""
        return len(self.regions) > 0

    # --- matrices ------------------------------------------------------------------------------
    def matrix_scipy(self) -> sp.csr_matrix:
        """A as scipy CSR, float64, (n, n), sorted column indices. A copy: modify it freely."""
        return self._matrix.copy()

    def matrix_torch(self, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
        """A as a torch sparse CSR tensor (n, n) with int64 indices; ``A @ v`` works for v (n,)."""
        A = self._matrix
        with warnings.catch_warnings():
            # torch's one-time "sparse CSR support is in beta" notice says nothing about this use
            warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta.*")
            return torch.sparse_csr_tensor(
                torch.from_numpy(A.indptr.astype(np.int64)), torch.from_numpy(A.indices.astype(np.int64)),
                torch.from_numpy(A.data.copy()), size=A.shape, dtype=dtype, device=device,
                check_invariants=False)

    # --- grid <-> unknowns ---------------------------------------------------------------------
    def to_grid(self, x, fill: float = 0.0):
        """Unknown vector(s) ``x (..., n)`` -> grid ``(..., N, N[, N])``; non-fluid cells get ``fill``.

        Accepts an ndarray or a Tensor and returns the same kind (a Tensor on x's device).
        """
        if x.shape[-1] != self.n:
            raise ValueError(f"x must end in the number of unknowns n = {self.n}; got shape {tuple(x.shape)}")
        lead = tuple(x.shape[:-1])
        size = self.flags.size
        if isinstance(x, torch.Tensor):
            out = torch.full(lead + (size,), fill, dtype=x.dtype, device=x.device)
            out[..., torch.from_numpy(self.cells).to(x.device)] = x
            return out.reshape(lead + self.flags.shape)
        x = np.asarray(x)
        out = np.full(lead + (size,), fill, dtype=np.result_type(x.dtype, np.float64))
        out[..., self.cells] = x
        return out.reshape(lead + self.flags.shape)

    def from_grid(self, u):
        """Grid field(s) ``u (..., N, N[, N])`` -> values on the unknowns ``(..., n)``, same kind as u."""
        shape = self.flags.shape
        if tuple(u.shape[u.ndim - self.dim:]) != shape:
            raise ValueError(f"u must end in the grid shape {shape}; got shape {tuple(u.shape)}")
        lead = tuple(u.shape[:u.ndim - self.dim])
        if isinstance(u, torch.Tensor):
            return u.reshape(lead + (-1,))[..., torch.from_numpy(self.cells).to(u.device)]
        return np.asarray(u).reshape(lead + (-1,))[..., self.cells]

    # --- null space ----------------------------------------------------------------------------
    def project_out_nullspace(self, v):
        """Remove the per-closed-region mean from ``v (..., n)``: the l2-orthogonal projection onto
        range(A). An ndarray or Tensor in, the same kind out; ``v`` itself (not a copy) when A is
        definite, a new array otherwise.
        """
        if v.shape[-1] != self.n:
            raise ValueError(f"v must end in the number of unknowns n = {self.n}; got shape {tuple(v.shape)}")
        if not self.regions:
            return v
        is_tensor = isinstance(v, torch.Tensor)
        t = v if is_tensor else torch.from_numpy(np.asarray(v, dtype=np.float64))
        R = len(self.regions)
        if R == 1 and self.regions[0].size == self.n:  # one closed region (e.g. the empty box): a plain mean
            out = t - t.mean(dim=-1, keepdim=True)
            return out if is_tensor else out.numpy()
        if t.device not in self._labels:  # cached: CG calls this every iteration
            # open regions go to a dummy bin R whose mean is never subtracted
            label = torch.from_numpy(np.where(self.region_of >= 0, self.region_of, R)).to(t.device)
            self._labels[t.device] = (label, torch.bincount(label, minlength=R + 1).clamp_min(1))
        label, counts = self._labels[t.device]
        sums = torch.zeros(t.shape[:-1] + (R + 1,), dtype=t.dtype, device=t.device).index_add_(-1, label, t)
        means = sums / counts.to(t.dtype)
        means[..., R] = 0
        out = t - means[..., label]
        return out if is_tensor else out.numpy()

    def nullspace_basis(self) -> np.ndarray:
        """Orthonormal null-space basis (n, R), float64 dense: normalised indicators of ``regions``."""
        basis = np.zeros((self.n, len(self.regions)))
        for r, idx in enumerate(self.regions):
            basis[idx, r] = 1.0 / np.sqrt(idx.size)
        return basis


def assemble(flags, scaled: bool = False) -> PoissonSystem:
    """Assemble the pressure-Poisson system of a flag grid (see the module docstring).

    Parameters
    ----------
    flags : integer array (N, N) or (N, N, N) of FLUID / SOLID / EMPTY (0 / 1 / 2); it is copied.
    scaled : multiply A by ``1/h² = N²`` (approximates ``−∇²``); right-hand sides made by this
        module follow (:attr:`PoissonSystem.rhs_scale`).

    Returns
    -------
    PoissonSystem with an (n, n) CSR float64 matrix, n = number of FLUID cells.
    """
    flags = _check_flags(flags)
    dim, shape = flags.ndim, flags.shape
    fluid = flags == FLUID
    n = int(fluid.sum())
    index = np.full(shape, -1, dtype=np.int64)
    index[fluid] = np.arange(n)
    cells = np.flatnonzero(fluid.ravel())

    diag = np.zeros(shape, dtype=np.float64)
    rows, cols = [], []
    touches_empty = np.zeros(shape, dtype=bool)
    for axis in range(dim):
        for step in (-1, 1):
            # cells outside the grid are walls: fill with SOLID so they add nothing to the diagonal
            nb = _shift(flags, axis, step, SOLID)
            diag += nb != SOLID
            touches_empty |= nb == EMPTY
        # each fluid–fluid face once (cell and its +1 neighbour), entered symmetrically below
        nb_index = _shift(index, axis, 1, -1)
        both = fluid & (nb_index >= 0)
        rows.append(index[both])
        cols.append(nb_index[both])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    scale = float(shape[0]) ** 2 if scaled else 1.0
    all_rows = np.concatenate([np.arange(n), rows, cols])
    all_cols = np.concatenate([np.arange(n), cols, rows])
    values = np.concatenate([diag[fluid], -np.ones(2 * rows.size)]) * scale
    A = sp.csr_matrix((values, (all_rows, all_cols)), shape=(n, n))
    A.sum_duplicates()
    A.sort_indices()

    # connected fluid regions (face connectivity); closed = no fluid cell with an EMPTY neighbour
    labels, n_labels = ndi.label(fluid, structure=ndi.generate_binary_structure(dim, 1))
    open_labels = np.unique(labels[fluid & touches_empty])
    closed = np.setdiff1d(np.arange(1, n_labels + 1), open_labels)
    label_of_unknown = labels.ravel()[cells]
    position = np.full(n_labels + 1, -1, dtype=np.int64)
    position[closed] = np.arange(closed.size)
    region_of = position[label_of_unknown]
    order = np.argsort(region_of, kind="stable")
    bounds = np.searchsorted(region_of[order], np.arange(closed.size + 1))
    regions = [order[bounds[r]:bounds[r + 1]] for r in range(closed.size)]
    return PoissonSystem(flags=flags, index=index, cells=cells, scaled=bool(scaled), regions=regions,
                         region_of=region_of, _matrix=A)


# --------------------------------------------------------------------------------------------------
# domains
# --------------------------------------------------------------------------------------------------
def cell_centres(N: int, dim: int) -> tuple[np.ndarray, ...]:
    """Cell-centre coordinates, one (N,)*dim float64 array per axis (``indexing="ij"``)."""
    x = (np.arange(N) + 0.5) / N
    return tuple(np.meshgrid(*([x] * dim), indexing="ij"))


def empty_box(N: int, dim: int = 3) -> np.ndarray:
    """All FLUID (N,)*dim, int8. The walls are the cells outside the grid (solid), so the system
    is the singular pure-Neumann Laplacian of the box with a one-dimensional (constant) null space.
    This is DCDM's training matrix."""
    N, dim = _check_grid(N, dim)
    return np.full((N,) * dim, FLUID, dtype=np.int8)


def _stamp_sphere(flags, centres, centre, radius, value):
    dist2 = sum((c - m) ** 2 for c, m in zip(centres, centre))
    flags[dist2 <= radius ** 2] = value


def box_with_obstacles(N: int, dim: int, n_obstacles: int, rng) -> np.ndarray:
    """Closed box (walls outside the grid) with ``n_obstacles`` random SOLID spheres and boxes.

    Obstacle ``k`` is a sphere or an axis-aligned box (probability ½ each) with centre uniform in
    ``[0.15, 0.85]^dim``, sphere radius uniform in ``[0.06, 0.16]``, box half-widths uniform in
    ``[0.04, 0.14]`` per axis; a cell is SOLID when its centre lies inside. All random numbers are
    drawn up front in a fixed order that does not depend on ``N``, so one seed gives the same
    continuous geometry at every resolution. There is no EMPTY cell, so every fluid region is
    closed (singular); obstacles can cut off pockets, each of which is one more closed region.

    Parameters
    ----------
    N, dim : cells per side, 2 or 3.
    n_obstacles : number of obstacles, ≥ 0.
    rng : np.random.Generator or integer seed.

    Returns
    -------
    int8 (N,)*dim flags.
    """
    N, dim = _check_grid(N, dim)
    if int(n_obstacles) < 0:
        raise ValueError(f"n_obstacles must be ≥ 0; got {n_obstacles}")
    n_obstacles = int(n_obstacles)
    g = _rng(rng)
    is_sphere = g.random(n_obstacles) < 0.5
    centre = g.uniform(0.15, 0.85, size=(n_obstacles, dim))
    radius = g.uniform(0.06, 0.16, size=n_obstacles)
    half = g.uniform(0.04, 0.14, size=(n_obstacles, dim))
    flags = empty_box(N, dim)
    xs = cell_centres(N, dim)
    for k in range(n_obstacles):
        if is_sphere[k]:
            _stamp_sphere(flags, xs, centre[k], radius[k], SOLID)
        else:
            inside = np.ones(flags.shape, dtype=bool)
            for x, c, w in zip(xs, centre[k], half[k]):
                inside &= np.abs(x - c) <= w
            flags[inside] = SOLID
    if not (flags == FLUID).any():
        raise ValueError("the obstacles cover every cell; use fewer obstacles or a larger N")
    return flags


def smoke_like(N: int, dim: int, rng, open_top: bool = True) -> np.ndarray:
    """A smoke-scene domain: closed box, one SOLID sphere, optionally an open top.

    * walls: the cells outside the grid (solid);
    * a sphere with centre uniform in ``[0.35, 0.65]`` on the horizontal axes and in ``[0.4, 0.6]``
      on the vertical (last) axis, radius uniform in ``[0.1, 0.2]`` (so it never reaches the top
      layer, and with N ≥ 3 never touches the side walls);
    * ``open_top=True``: the top layer (last index ``N−1`` of the last axis) is EMPTY, a free
      surface with ``p = 0``: the fluid touches it, so A is positive definite. ``open_top=False``:
      no EMPTY cell at all, a closed smoke box (singular, constant null space), as in DCDM's scenes.

    Parameters
    ----------
    N, dim : cells per side (≥ 3), 2 or 3.
    rng : np.random.Generator or integer seed; three draws (centre, radius) independent of N.

    Returns
    -------
    int8 (N,)*dim flags.
    """
    N, dim = _check_grid(N, dim)
    if N < 3:
        raise ValueError(f"smoke_like needs N ≥ 3 (walls, obstacle, top layer); got {N}")
    g = _rng(rng)
    centre = np.concatenate([g.uniform(0.35, 0.65, size=dim - 1), g.uniform(0.4, 0.6, size=1)])
    radius = g.uniform(0.1, 0.2)
    flags = empty_box(N, dim)
    _stamp_sphere(flags, cell_centres(N, dim), centre, radius, SOLID)
    if open_top:
        flags[..., -1] = EMPTY
    return flags


# --------------------------------------------------------------------------------------------------
# right-hand sides
# --------------------------------------------------------------------------------------------------
DOMAINS = ("empty_box", "box_with_obstacles", "smoke_like", "smoke_like_closed")


def make_domain(name: str, N: int, dim: int = 3, seed: int = 0, n_obstacles: int = 4) -> np.ndarray:
    """Flags of a named domain (the config's ``domain``): one of :data:`DOMAINS`."""
    if name == "empty_box":
        return empty_box(N, dim)
    if name == "box_with_obstacles":
        return box_with_obstacles(N, dim, n_obstacles, seed)
    if name in ("smoke_like", "smoke_like_closed"):
        return smoke_like(N, dim, seed, open_top=name == "smoke_like")
    raise ValueError(f"unknown domain {name!r}; choose one of {', '.join(DOMAINS)}")


def _smooth_coefficients(g: np.random.Generator, dim: int, modes: int) -> np.ndarray:
    """Coefficients (2·modes+1,)*dim of the separable cos/sin basis, decaying like 1/(1 + |k|²)."""
    k = np.concatenate([[0], np.arange(1, modes + 1), np.arange(1, modes + 1)])  # 1, cos k, sin k
    k2 = sum(np.meshgrid(*([k ** 2] * dim), indexing="ij"))
    return g.standard_normal((k.size,) * dim) / (1.0 + k2)


def _basis(x: np.ndarray, modes: int) -> np.ndarray:
    """(2·modes+1, len(x)): 1, cos(πkx), sin(πkx) for k = 1..modes."""
    k = np.arange(1, modes + 1)[:, None]
    return np.concatenate([np.ones((1, x.size)), np.cos(np.pi * k * x), np.sin(np.pi * k * x)])


def _evaluate(coef: np.ndarray, axes: list[np.ndarray], modes: int) -> np.ndarray:
    """Separable series at the tensor grid of the 1-D coordinate arrays ``axes``."""
    out = coef
    for x in axes:
        # contract the leading coefficient axis; evaluated axes accumulate at the end
        out = np.tensordot(out, _basis(x, modes), axes=([0], [0]))
    return out


def smooth_random_field(N: int, dim: int, rng, modes: int = 4) -> np.ndarray:
    """A smooth random field at the cell centres, (N,)*dim float64.

    ``Σ_k c_k Π_d φ_{k_d}(x_d)`` with ``φ ∈ {1, cos(πkx), sin(πkx)}``, ``k ≤ modes``, and
    ``c_k ~ N(0, 1) / (1 + |k|²)``. The coefficients do not depend on N (same field at every
    resolution for one seed).
    """
    N, dim = _check_grid(N, dim)
    coef = _smooth_coefficients(_rng(rng), dim, modes)
    x = (np.arange(N) + 0.5) / N
    return _evaluate(coef, [x] * dim, modes)


def random_rhs(system: PoissonSystem, rng, smooth: bool = True, modes: int = 4) -> np.ndarray:
    """A compatible random right-hand side b (n,) float64.

    ``smooth=True``: :func:`smooth_random_field` as the source ``f`` on the fluid cells;
    ``smooth=False``: white noise ``N(0, 1)`` per unknown (the hardest case for smoothers, easy for
    CG). Either is multiplied by :attr:`PoissonSystem.rhs_scale` and has the per-closed-region mean
    projected out, so ``A x = b`` is solvable.
    """
    g = _rng(rng)
    if smooth:
        f = system.from_grid(smooth_random_field(system.N, system.dim, g, modes))
    else:
        f = g.standard_normal(system.n)
    return system.project_out_nullspace(f * system.rhs_scale)


def _solid_face(flags: np.ndarray, axis: int) -> np.ndarray:
    """Faces normal to ``axis`` (N+1 along it): True where a side is SOLID or outside the grid."""
    pad = [(0, 0)] * flags.ndim
    pad[axis] = (1, 1)
    solid = np.pad(flags == SOLID, pad, constant_values=True)
    lo = [slice(None)] * flags.ndim
    hi = [slice(None)] * flags.ndim
    lo[axis], hi[axis] = slice(None, -1), slice(1, None)
    return solid[tuple(lo)] | solid[tuple(hi)]


def random_mac_velocity(system: PoissonSystem, rng, modes: int = 4) -> list[np.ndarray]:
    """A smooth random velocity on the MAC faces, zero on faces that touch SOLID or the walls.

    Returns
    -------
    list of ``dim`` float64 arrays; component ``d`` lives on the faces normal to axis ``d``, shaped
    ``N + 1`` along axis ``d`` and ``N`` along the others (face ``i`` of axis ``d`` lies at
    ``x_d = i h``). Each component is an independent :func:`smooth_random_field`-type series
    (coefficients independent of N) evaluated at the face centres.
    """
    g = _rng(rng)
    N, dim = system.N, system.dim
    centres = (np.arange(N) + 0.5) / N
    nodes = np.arange(N + 1) / N
    faces = []
    for d in range(dim):
        coef = _smooth_coefficients(g, dim, modes)
        u = _evaluate(coef, [nodes if a == d else centres for a in range(dim)], modes)
        u[_solid_face(system.flags, d)] = 0.0
        faces.append(u)
    return faces


def mac_divergence(system: PoissonSystem, faces: list[np.ndarray]) -> np.ndarray:
    """Discrete divergence ``Σ_d (u_d[i+1] − u_d[i]) / h`` of MAC face velocities, (N,)*dim float64
    (computed on every cell; only fluid cells are meaningful)."""
    div = np.zeros(system.flags.shape)
    for d, u in enumerate(faces):
        expected = list(system.flags.shape)
        expected[d] += 1
        if u.shape != tuple(expected):
            raise ValueError(f"faces[{d}] must have shape {tuple(expected)}; got {u.shape}")
        div += np.diff(u, axis=d)
    return div / system.h


def divergence_rhs(system: PoissonSystem, rng, modes: int = 4, return_velocity: bool = False):
    """Right-hand side of the pressure projection of a random smooth MAC velocity.

    ``b = rhs_scale · (−∇·u*)`` on the fluid cells, with ``u*`` from :func:`random_mac_velocity`:
    solving ``A p = b`` and setting ``u = u* − ∇p`` (:func:`subtract_pressure_gradient`) makes
    ``u`` divergence free on every fluid cell (time step and density 1). The per-region mean is
    projected out too, which only removes rounding (the divergence of a closed region sums to 0).

    Returns
    -------
    b (n,) float64, or ``(b, faces)`` when ``return_velocity``.
    """
    faces = random_mac_velocity(system, rng, modes)
    b = system.project_out_nullspace(-system.from_grid(mac_divergence(system, faces)) * system.rhs_scale)
    return (b, faces) if return_velocity else b


def subtract_pressure_gradient(system: PoissonSystem, faces: list[np.ndarray], p) -> list[np.ndarray]:
    """``u − ∇p`` on the MAC faces: ``(p_hi − p_lo)/h`` on faces between non-solid cells, with
    ``p = 0`` in EMPTY cells; faces touching SOLID or a wall are left alone (they are 0 already).

    ``p`` is the unknown vector (n,) (ndarray or Tensor); returns new face arrays.
    """
    p_grid = system.to_grid(p.detach().cpu().double().numpy() if isinstance(p, torch.Tensor) else p)
    out = []
    for d, u in enumerate(faces):
        grad = np.zeros_like(u)
        inner = [slice(None)] * system.dim
        inner[d] = slice(1, -1)
        grad[tuple(inner)] = np.diff(p_grid, axis=d) / system.h
        grad[_solid_face(system.flags, d)] = 0.0
        out.append(u - grad)
    return out


# --------------------------------------------------------------------------------------------------
# reference solver
# --------------------------------------------------------------------------------------------------
def solve_direct(system: PoissonSystem, b) -> np.ndarray:
    """Sparse direct solution (SuperLU, ``scipy.sparse.linalg.splu``), the reference for tests.

    ``b`` (n,) is projected onto range(A) first. SuperLU cannot factor a singular matrix, so one
    unknown per closed region is pinned to 0 (its row and column removed: the remaining block is
    definite, and the removed equation holds automatically for a compatible b); the result is then
    shifted to zero mean on each closed region, the same representative the Krylov solvers return.

    SuperLU runs in symmetric mode (minimum degree on ``Aᵀ + A``, diagonal pivots; safe for SPD):
    at 32³ that is ~3× faster than ``spsolve``'s default COLAMD with partial pivoting, which fills in
    more than twice as much.

    Returns
    -------
    x (n,) float64 ndarray.
    """
    b = np.asarray(b.detach().cpu().double().numpy() if isinstance(b, torch.Tensor) else b, dtype=np.float64)
    if b.shape != (system.n,):
        raise ValueError(f"b must have shape ({system.n},); got {b.shape}")
    b = system.project_out_nullspace(b)
    keep = np.ones(system.n, dtype=bool)
    keep[[r[0] for r in system.regions]] = False
    A = system._matrix[keep][:, keep].tocsc()
    x = np.zeros(system.n)
    if keep.any():
        lu = spla.splu(A, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                       options=dict(SymmetricMode=True))
        x[keep] = lu.solve(b[keep])
    return system.project_out_nullspace(x)
