"""Periodic RVE solver: 2-D plane-strain, small-strain finite elements for FE² homogenisation data.

This is the micro problem of EquiNO (arXiv 2504.07976, see ``shared/reference/equino.md`` §2.1, §3):
given a macro strain Ē, find the periodic fluctuation ũ of u = Ē·x + ũ on Ω = [−0.5, 0.5]² that
puts the two-phase RVE in equilibrium, then report the homogenised stress σ̄ and tangent C̄.

Conventions
-----------
* Macro input ``E_bar = (Ē_xx, Ē_yy, γ̄_xy)`` with ENGINEERING shear; the affine displacement is
  u_x = Ē_xx x + ½γ̄ y, u_y = Ē_yy y + ½γ̄ x, so its strain is ``T Ē = (Ē_xx, Ē_yy, γ̄/2)``.
* Strain is stored as ``[ε_xx, ε_yy, ε_xy]`` with TENSOR shear (ε_xy = ½(∂_y u_x + ∂_x u_y)), and
  stress as ``[σ_xx, σ_yy, σ_xy]``. The B operator (:attr:`RVESolver.B`) gives this tensor strain.
  Virtual work is σ:δε = σ_xx δε_xx + σ_yy δε_yy + 2 σ_xy δε_xy, so the internal force uses the
  engineering-shear operator ``Bv = D B``, D = diag(1, 1, 2): f = Σ Bvᵀσ w and K = Σ Bvᵀ C B w,
  with ``C = ∂σ/∂ε`` (tensor strain). C̄ is ∂σ̄/∂(Ē_xx, Ē_yy, γ̄), i.e. w.r.t. the engineering input.

Discretisation
--------------
Structured n×n mesh of 8-node serendipity quads (3×3 Gauss) or bilinear quads (2×2 Gauss);
integration point ``q`` of element ``e`` is ip ``e·n_gp + q``, weight ``w_ip = detJ·w_gauss``.
Periodicity is imposed by static substitution: every node has a master (right edge → left edge,
top → bottom, all corners → the bottom-left corner) and only master nodes carry unknowns. The
bottom-left corner (−0.5, −0.5) is pinned: ũ = 0 there, hence at all four corners (one periodic
node), which removes rigid translation. :func:`make_rve` numbers it node 0, and :class:`RVEMesh`
finds it by its coordinates, so renumbering the nodes is harmless.
Newton's method with the consistent tangent runs on the reduced unknowns; sparse matrices are
assembled by ``np.bincount`` into a CSR pattern computed once, and factorised by SuperLU (the
matrix-phase tangent is not symmetric, see :class:`NonlinearElastic`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from neuropde.errors import UserError

__all__ = ["RVEMesh", "make_rve", "LinearElastic", "NonlinearElastic", "MATERIALS", "stress", "tangent",
           "affine_strain", "RVEResult", "RVESolver", "GEOMETRIES"]

GEOMETRIES = ("fibre", "ellipse", "three_circles", "homogeneous_matrix", "homogeneous_inclusion")
_NEN = {"quad8": 8, "quad4": 4}
_M = np.array([1.0, 1.0, 0.0])  # trace direction in [xx, yy, xy]
_P = np.eye(3) - np.outer(_M, _M) / 3.0  # ε ↦ ε^D = ε − (trE/3)[1,1,0], as coded in the reference
_W = np.array([1.0, 1.0, 2.0])  # tensor-shear norm weights: s² = εᵀ diag(W) ε


# --------------------------------------------------------------------------------------------------
# materials
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LinearElastic:
    """σ = K trE [1,1,0] + 2G ε^D (phase 2, the inclusions)."""

    K: float = 4.34523810e4
    G: float = 2.99180328e4

    def stress(self, eps: np.ndarray) -> np.ndarray:
        """eps (n, 3) tensor shear -> σ (n, 3)."""
        return self.K * eps[:, :2].sum(1, keepdims=True) * _M + 2 * self.G * eps @ _P.T

    def tangent(self, eps: np.ndarray) -> np.ndarray:
        """eps (n, 3) -> C = ∂σ/∂ε (n, 3, 3), constant."""
        return np.broadcast_to(self.K * np.outer(_M, _M) + 2 * self.G * _P, (len(eps), 3, 3)).copy()


@dataclass(frozen=True)
class NonlinearElastic:
    """σ = K trE [1,1,0] + α/(β + s) ε^D, s = (ε^D_xx² + ε^D_yy² + 2ε^D_xy²)^½ (phase 1, the matrix).

    Because ε^D = Pε is not an orthogonal projection in 2-D (tr ε^D = trE/3), σ is not the gradient
    of a potential and the tangent C = K mmᵀ + aP + (da/ds) ε^D (W ε^D)ᵀ P / s is not symmetric.
    """

    K: float = 4.78e3
    alpha: float = 50.0
    beta: float = 0.06

    def stress(self, eps: np.ndarray) -> np.ndarray:
        dev = eps @ _P.T
        s = np.sqrt((_W * dev ** 2).sum(1, keepdims=True))
        return self.K * eps[:, :2].sum(1, keepdims=True) * _M + self.alpha / (self.beta + s) * dev

    def tangent(self, eps: np.ndarray) -> np.ndarray:
        dev = eps @ _P.T
        s = np.sqrt((_W * dev ** 2).sum(1))
        a = self.alpha / (self.beta + s)
        # (da/ds)/s = −α/((β+s)² s); the term it multiplies is O(s²), so it vanishes at s = 0
        da_s = np.where(s > 0, -self.alpha / ((self.beta + s) ** 2 * np.where(s > 0, s, 1.0)), 0.0)
        ds = (_W * dev) @ _P  # row vector (Wε^D)ᵀP per point, = s ∂s/∂ε
        return (self.K * np.outer(_M, _M) + a[:, None, None] * _P
                + da_s[:, None, None] * dev[:, :, None] * ds[:, None, :])


MATERIALS = {1: NonlinearElastic(), 2: LinearElastic()}


def _by_phase(fn: str, eps, phase, materials, shape) -> np.ndarray:
    eps = np.asarray(eps, dtype=np.float64)
    phase = np.broadcast_to(np.asarray(phase), eps.shape[:1])
    materials = MATERIALS if materials is None else materials
    out = np.empty((len(eps),) + shape)
    for pid in np.unique(phase):
        if int(pid) not in materials:
            raise UserError(f"no material for phase {pid}: pass materials={{{pid}: LinearElastic(...)}}")
        sel = phase == pid
        out[sel] = getattr(materials[int(pid)], fn)(eps[sel])
    return out


def stress(eps, phase, materials=None) -> np.ndarray:
    """σ at integration points: eps (n_ip, 3) tensor shear, phase (n_ip,) or scalar -> (n_ip, 3)."""
    return _by_phase("stress", eps, phase, materials, (3,))


def tangent(eps, phase, materials=None) -> np.ndarray:
    """Consistent material tangent ∂σ/∂ε (tensor-shear ε): (n_ip, 3) -> (n_ip, 3, 3)."""
    return _by_phase("tangent", eps, phase, materials, (3, 3))


def affine_strain(E_bar) -> np.ndarray:
    """Macro strain (Ē_xx, Ē_yy, γ̄) (..., 3), engineering shear -> tensor shear (Ē_xx, Ē_yy, γ̄/2)."""
    return np.asarray(E_bar, dtype=np.float64) * np.array([1.0, 1.0, 0.5])


# --------------------------------------------------------------------------------------------------
# mesh
# --------------------------------------------------------------------------------------------------
@dataclass
class RVEMesh:
    """A periodic mesh of Ω = [−0.5, 0.5]².

    Attributes
    ----------
    nodes : (n_nodes, 2) float64 coordinates.
    elements : (n_el, 8) or (n_el, 4) int64 connectivity; corners counter-clockwise, then (quad8)
        the midsides of edges 1-2, 2-3, 3-4, 4-1.
    phase : (n_el,) int64, 1 = matrix (nonlinear), 2 = inclusion (linear).
    element : "quad8" or "quad4".
    master : (n_nodes,) periodic master of each node (derived from the coordinates).
    pinned : index of the node at (−0.5, −0.5), a master whose ũ is fixed to 0 (derived).
    """

    nodes: np.ndarray
    elements: np.ndarray
    phase: np.ndarray
    element: str = "quad8"
    master: np.ndarray = field(init=False, repr=False)
    pinned: int = field(init=False)

    def __post_init__(self):
        if self.element not in _NEN:
            raise UserError(f"unknown element {self.element!r}: use one of {sorted(_NEN)}")
        self.nodes = np.asarray(self.nodes, dtype=np.float64)
        self.elements = np.asarray(self.elements, dtype=np.int64)
        self.phase = np.asarray(self.phase, dtype=np.int64)
        if self.phase.shape != self.elements.shape[:1]:
            raise UserError(f"phase needs one entry per element ({len(self.elements)}); "
                            f"got shape {self.phase.shape}")
        if self.elements.ndim != 2 or self.elements.shape[1] != _NEN[self.element]:
            raise UserError(f"{self.element} elements need {_NEN[self.element]} nodes each; "
                            f"got connectivity of shape {self.elements.shape}")
        x, y = self.nodes.T
        tol = 1e-9
        mx = _pair(self.nodes, np.abs(x - 0.5) < tol, np.abs(x + 0.5) < tol, axis=1, tol=tol)
        my = _pair(self.nodes, np.abs(y - 0.5) < tol, np.abs(y + 0.5) < tol, axis=0, tol=tol)
        self.master = my[mx]  # top-right -> top-left -> bottom-left: corners share one master
        corner = np.flatnonzero((np.abs(x + 0.5) < tol) & (np.abs(y + 0.5) < tol))
        if corner.size != 1:
            raise UserError("the mesh needs exactly one node at the corner (−0.5, −0.5) to pin")
        self.pinned = int(corner[0])

    @property
    def n_nodes(self) -> int:
        return len(self.nodes)

    @property
    def volume_fraction(self) -> float:
        """Area fraction of phase 2 (element-wise, from the corner polygons)."""
        x, y = np.moveaxis(self.nodes[self.elements[:, :4]], -1, 0)  # (n_el, 4) each
        area = 0.5 * np.abs(np.sum(x * np.roll(y, -1, 1) - np.roll(x, -1, 1) * y, 1))  # shoelace
        return float(area[self.phase == 2].sum() / area.sum())


def _pair(nodes, slave, target, axis, tol):
    """Node map sending each ``slave``-edge node to the ``target``-edge node with the same coordinate ``axis``."""
    m = np.arange(len(nodes))
    s_idx, t_idx = np.flatnonzero(slave), np.flatnonzero(target)
    t_idx = t_idx[np.argsort(nodes[t_idx, axis])]
    t_val = nodes[t_idx, axis]
    k = np.clip(np.searchsorted(t_val, nodes[s_idx, axis] - tol), 0, max(len(t_idx) - 1, 0))
    if len(s_idx) != len(t_idx) or np.any(np.abs(t_val[k] - nodes[s_idx, axis]) > tol):
        raise UserError("the mesh is not periodic: every node on the right (top) edge needs a node on "
                        "the left (bottom) edge at the same y (x); mesh opposite edges identically")
    m[s_idx] = t_idx[k]
    return m


def _inclusion(geometry: str, c: np.ndarray) -> np.ndarray:
    """Whether points c (n, 2) lie in the inclusion phase of ``geometry`` (fraction 0.3 where not trivial)."""
    x, y = c.T
    if geometry == "fibre":
        return x ** 2 + y ** 2 < 0.3 / np.pi
    if geometry == "ellipse":  # semi-axes 2:1, πab = 0.3, major axis at 45°
        b = np.sqrt(0.3 / (2 * np.pi))
        xr, yr = (x + y) / np.sqrt(2), (y - x) / np.sqrt(2)
        return (xr / (2 * b)) ** 2 + (yr / b) ** 2 < 1
    if geometry == "three_circles":  # three disjoint circles of fraction 0.1 each, inside Ω
        r2 = 0.1 / np.pi
        centres = np.array([[-0.22, -0.20], [0.22, -0.15], [0.0, 0.24]])
        return (((c[:, None, :] - centres) ** 2).sum(-1) < r2).any(1)
    return np.full(len(c), geometry == "homogeneous_inclusion")


def make_rve(geometry: str, n: int, element: str = "quad8") -> RVEMesh:
    """Structured n×n periodic RVE mesh of [−0.5, 0.5]² with an element-wise phase.

    Nodes lie on a (2n+1)² (quad8; element centres omitted) or (n+1)² (quad4) grid, numbered row
    by row from the bottom (x fastest), so node 0 is the pinned corner (−0.5, −0.5). A 16×16 quad8
    mesh has 833 nodes, 256 elements, 2 304 integration points.

    Parameters
    ----------
    geometry : one of :data:`GEOMETRIES`; an element is inclusion (phase 2) when its centroid is.
    n : elements per side (≥ 2).
    element : "quad8" (serendipity, default) or "quad4".
    """
    if geometry not in GEOMETRIES:
        raise UserError(f"unknown RVE geometry {geometry!r}: use one of {', '.join(GEOMETRIES)}")
    if element not in _NEN:
        raise UserError(f"unknown element {element!r}: use one of {sorted(_NEN)}")
    if int(n) < 2:
        raise UserError(f"n must be at least 2 elements per side; got {n}")
    n, k = int(n), (2 if element == "quad8" else 1)  # k: grid points per element edge, minus one
    g = np.arange(k * n + 1)
    I, J = np.meshgrid(g, g, indexing="xy")  # J (row, y) outer, I (x) fastest
    keep = ~((I % 2 == 1) & (J % 2 == 1)) if k == 2 else np.ones_like(I, bool)
    gid = np.full(I.shape, -1)
    gid[keep] = np.arange(keep.sum())
    coord = np.linspace(-0.5, 0.5, k * n + 1)
    nodes = np.stack([coord[I[keep]], coord[J[keep]]], 1)
    ex, ey = np.meshgrid(np.arange(n) * k, np.arange(n) * k, indexing="xy")
    ex, ey = ex.ravel(), ey.ravel()
    offsets = [(0, 0), (k, 0), (k, k), (0, k)] + ([(1, 0), (2, 1), (1, 2), (0, 1)] if k == 2 else [])
    elements = np.stack([gid[ey + dj, ex + di] for di, dj in offsets], 1)
    phase = np.where(_inclusion(geometry, nodes[elements[:, :4]].mean(1)), 2, 1)
    return RVEMesh(nodes, elements, phase, element)


# --------------------------------------------------------------------------------------------------
# solver
# --------------------------------------------------------------------------------------------------
def _shape_derivatives(element: str):
    """Gauss points' weights (n_gp,) and dN/dξ (n_gp, 2, nen) on the reference square [−1, 1]²."""
    if element == "quad8":
        p, w = np.array([-np.sqrt(0.6), 0.0, np.sqrt(0.6)]), np.array([5, 8, 5]) / 9
    else:
        p, w = np.array([-1, 1]) / np.sqrt(3), np.ones(2)
    xi, eta = (a.ravel() for a in np.meshgrid(p, p, indexing="xy"))
    wg = np.outer(w, w).ravel()
    cx, cy = np.array([-1, 1, 1, -1.0]), np.array([-1, -1, 1, 1.0])
    X, E = xi[:, None], eta[:, None]
    if element == "quad4":
        dxi = 0.25 * cx * (1 + E * cy)
        deta = 0.25 * cy * (1 + X * cx)
    else:  # corners ¼(1+ξξᵢ)(1+ηηᵢ)(ξξᵢ+ηηᵢ−1); midsides ½(1−ξ²)(1+ηηᵢ), ½(1+ξξᵢ)(1−η²)
        dxi_c = 0.25 * cx * (1 + E * cy) * (2 * X * cx + E * cy)
        deta_c = 0.25 * cy * (1 + X * cx) * (X * cx + 2 * E * cy)
        my, mx = np.array([-1, 1.0]), np.array([1, -1.0])  # nodes 5, 7 (η = ∓1) and 6, 8 (ξ = ±1)
        dxi = np.concatenate([dxi_c, -X * (1 + E * my[0]), 0.5 * mx[0] * (1 - E ** 2),
                              -X * (1 + E * my[1]), 0.5 * mx[1] * (1 - E ** 2)], 1)
        deta = np.concatenate([deta_c, 0.5 * my[0] * (1 - X ** 2), -E * (1 + X * mx[0]),
                               0.5 * my[1] * (1 - X ** 2), -E * (1 + X * mx[1])], 1)
    return wg, np.stack([dxi, deta], 1)


@dataclass
class RVEResult:
    """A converged micro state; fields per :meth:`RVESolver.solve`."""

    E_bar: np.ndarray
    u: np.ndarray
    u_fluct: np.ndarray
    eps: np.ndarray
    sigma: np.ndarray
    sigma_bar: np.ndarray
    residual_history: list
    iterations: int
    converged: bool


class RVESolver:
    """Newton solver for the periodic RVE problem on ``mesh`` (all geometry precomputed here).

    Attributes
    ----------
    B : (n_el, n_gp, 3, 2·nen) tensor-shear strain operator on element dofs [u_x1, u_y1, u_x2, …].
    w : (n_ip,) integration weights detJ·w_gauss; ``w.sum()`` is |Ω| = 1.
    phase_ip : (n_ip,) phase of each integration point.
    dof_map : (n_nodes, 2) reduced unknown of each nodal dof, −1 for the pinned corner's class.
    n_dof : number of reduced unknowns, 2·(n_masters − 1).
    """

    def __init__(self, mesh: RVEMesh, materials: dict | None = None):
        self.mesh, self.materials = mesh, (MATERIALS if materials is None else materials)
        wg, dN = _shape_derivatives(mesh.element)
        Xe = mesh.nodes[mesh.elements]  # (n_el, nen, 2)
        J = np.einsum("qan,enb->eqab", dN, Xe)  # J[a, b] = ∂x_b/∂ξ_a
        det = np.linalg.det(J)
        if np.any(det <= 0):
            bad = int((det <= 0).any(1).sum())
            raise UserError(f"{bad} element(s) are inverted or degenerate (detJ ≤ 0): order corners"
                            " counter-clockwise and keep midside nodes near mid-edge")
        dNx = np.linalg.solve(J, np.broadcast_to(dN, J.shape[:2] + dN.shape[1:]))  # (n_el, n_gp, 2, nen)
        n_el, n_gp, _, nen = dNx.shape
        B = np.zeros((n_el, n_gp, 3, nen, 2))
        B[:, :, 0, :, 0] = dNx[:, :, 0]
        B[:, :, 1, :, 1] = dNx[:, :, 1]
        B[:, :, 2, :, 0] = 0.5 * dNx[:, :, 1]  # ε_xy = ½(∂_y u_x + ∂_x u_y): tensor shear
        B[:, :, 2, :, 1] = 0.5 * dNx[:, :, 0]
        self.B = B.reshape(n_el, n_gp, 3, 2 * nen)
        self._Bv = self.B * _W[:, None]  # engineering-shear rows for virtual work (σ:δε)
        self.w = (det * wg).ravel()
        self.volume = self.w.sum()
        self.phase_ip = np.repeat(mesh.phase, n_gp)
        # reduced unknowns: 2 per master node except the pinned one, numbered in node order
        masters = np.unique(mesh.master)
        rank = np.full(mesh.n_nodes, -1)
        rank[masters[masters != mesh.pinned]] = np.arange(len(masters) - 1)
        r = rank[mesh.master]
        self.dof_map = np.where(r[:, None] >= 0, 2 * r[:, None] + np.arange(2), -1)
        self.n_dof = 2 * (len(masters) - 1)
        edof = self.dof_map[mesh.elements].reshape(n_el, -1)  # (n_el, 2·nen)
        self._f_sel = edof.ravel() >= 0
        self._f_idx = edof.ravel()[self._f_sel]
        rows, cols = np.broadcast_arrays(edof[:, :, None], edof[:, None, :])
        self._k_sel = ((rows >= 0) & (cols >= 0)).ravel()
        keys = (rows.ravel() * self.n_dof + cols.ravel())[self._k_sel]
        ukeys, self._k_pos = np.unique(keys, return_inverse=True)  # sorted row-major = CSR order
        self._k_indices = (ukeys % self.n_dof).astype(np.int32)
        self._k_indptr = np.searchsorted(ukeys // self.n_dof, np.arange(self.n_dof + 1)).astype(np.int32)

    # --- pieces ---------------------------------------------------------------------------------
    def _full(self, u_red: np.ndarray) -> np.ndarray:
        """Reduced unknowns (n_dof,) -> periodic nodal fluctuation (n_nodes, 2), 0 at the corners."""
        return np.where(self.dof_map >= 0, u_red[np.maximum(self.dof_map, 0)], 0.0)

    def _strain(self, u: np.ndarray) -> np.ndarray:
        ue = u[self.mesh.elements].reshape(len(self.mesh.elements), -1)
        return np.einsum("eqia,ea->eqi", self.B, ue).reshape(-1, 3)

    def _residual(self, sig: np.ndarray) -> tuple[np.ndarray, float]:
        """R = Σ Bvᵀσ w on the reduced dofs (n_dof,), and the norm of the unassembled forces."""
        fe = np.einsum("eqia,eqi->ea", self._Bv, (sig * self.w[:, None]).reshape(self.B.shape[:3]))
        return np.bincount(self._f_idx, fe.ravel()[self._f_sel], self.n_dof), float(np.linalg.norm(fe))

    def _stiffness(self, C: np.ndarray) -> sp.csr_matrix:
        """K = Σ Bvᵀ C B w on the reduced dofs, C (n_ip, 3, 3)."""
        Cw = (C * self.w[:, None, None]).reshape(self.B.shape[:2] + (3, 3))
        # optimize=True contracts pairwise (BLAS): 20× faster than the plain three-operand einsum
        ke = np.einsum("eqia,eqij,eqjb->eab", self._Bv, Cw, self.B, optimize=True)
        data = np.bincount(self._k_pos, ke.ravel()[self._k_sel], len(self._k_indices))
        return sp.csr_matrix((data, self._k_indices, self._k_indptr), shape=(self.n_dof,) * 2)

    @staticmethod
    def _factor(K: sp.csr_matrix):
        # the pattern is structurally symmetric: minimum degree on Aᵀ+A factorises in half COLAMD's time
        return spla.splu(K.tocsc(), permc_spec="MMD_AT_PLUS_A")

    def affine_displacement(self, E_bar) -> np.ndarray:
        """u = Ē·x (n_nodes, 2) for the engineering-shear macro strain E_bar (3,)."""
        Exx, Eyy, g = np.asarray(E_bar, dtype=np.float64)
        x, y = self.mesh.nodes.T
        return np.stack([Exx * x + 0.5 * g * y, Eyy * y + 0.5 * g * x], 1)

    # --- public ---------------------------------------------------------------------------------
    def solve(self, E_bar, tol: float = 1e-10, max_iter: int = 25, raise_on_failure: bool = True) -> RVEResult:
        """Equilibrate the RVE under macro strain ``E_bar = (Ē_xx, Ē_yy, γ̄_xy)`` (engineering shear).

        Newton stops when ‖R‖ ≤ max(tol·‖R₀‖, 1e3·eps·‖f_e‖), ‖f_e‖ the norm of the unassembled
        element forces. The second bound is the round-off floor of the assembled sum (measured:
        3–20·eps·‖f_e‖ for n = 8–64), which is all ‖R₀‖ is on a homogeneous RVE; there Newton stops
        at once instead of chasing noise (as it does when ‖R₀‖ = 0). On the fibre RVE ‖R₀‖ ≈ 0.2–0.5
        ‖f_e‖, so the relative test decides.

        Returns
        -------
        RVEResult with ``u`` (n_nodes, 2) total displacement, ``u_fluct`` (n_nodes, 2) periodic
        fluctuation (0 at the pinned corner), ``eps``/``sigma`` (n_ip, 3) tensor-shear strain and
        stress, ``sigma_bar`` (3,) = Σ w σ / |Ω|, ``residual_history`` (‖R_k‖, k = 0..iterations),
        ``iterations`` (linear solves), ``converged``.
        """
        E_bar = np.asarray(E_bar, dtype=np.float64)
        if E_bar.shape != (3,) or not np.all(np.isfinite(E_bar)):
            raise UserError(f"E_bar must be 3 finite numbers (Ē_xx, Ē_yy, γ̄_xy); got {E_bar!r}")
        u_aff, eps_aff = self.affine_displacement(E_bar), affine_strain(E_bar)
        u_red, history = np.zeros(self.n_dof), []
        for it in range(max_iter + 1):
            u_fl = self._full(u_red)
            # T Ē exactly rather than B u_aff (equal on any isoparametric mesh, see the patch test):
            # on a homogeneous RVE every point then has the same σ and R₀ is pure assembly round-off
            eps = eps_aff + self._strain(u_fl)
            sig = stress(eps, self.phase_ip, self.materials)
            R, f_norm = self._residual(sig)
            history.append(float(np.linalg.norm(R)))
            converged = history[-1] <= max(tol * history[0], 1e3 * np.finfo(float).eps * f_norm)
            if converged or it == max_iter or not np.isfinite(history[-1]):
                break
            K = self._stiffness(tangent(eps, self.phase_ip, self.materials))
            u_red = u_red - self._factor(K).solve(R)
        if not converged and raise_on_failure:
            raise UserError(f"Newton did not converge for E_bar = {E_bar.tolist()} in {max_iter} iterations "
                            f"(‖R‖/‖R₀‖ = {history[-1] / history[0]:.2e}): use smaller macro strains "
                            f"(the data box is ±0.04) or raise max_iter")
        sigma_bar = (self.w[:, None] * sig).sum(0) / self.volume
        return RVEResult(E_bar, u_aff + u_fl, u_fl, eps, sig, sigma_bar, history, it, bool(converged))

    def homogenized_tangent(self, result: RVEResult) -> np.ndarray:
        """C̄ = dσ̄/d(Ē_xx, Ē_yy, γ̄) (3, 3) at a converged state, by static condensation.

        Differentiating R(ũ, Ē) = 0 gives K dũ/dĒ = −Σ Bvᵀ C T w (three right-hand sides, T =
        diag(1, 1, ½) the engineering-to-tensor shear map), and C̄ = Σ w C (T + B dũ/dĒ) / |Ω|.
        """
        C = tangent(result.eps, self.phase_ip, self.materials)
        CT = C * np.array([1.0, 1.0, 0.5])  # (n_ip, 3, 3): ∂σ/∂Ē at fixed ũ
        cols = [self._residual(CT[:, :, j])[0] for j in range(3)]
        dU = self._factor(self._stiffness(C)).solve(-np.stack(cols, 1))  # (n_dof, 3)
        deps = np.stack([self._strain(self._full(dU[:, j])) for j in range(3)], 2)  # (n_ip, 3, 3)
        return np.einsum("q,qij->ij", self.w, CT + C @ deps) / self.volume

    def solve_many(self, E_bars, with_tangent: bool = True, **kwargs) -> dict:
        """Solve for each row of E_bars (N, 3); returns stacked arrays.

        Keys: ``E_bar`` (N, 3), ``sigma_bar`` (N, 3), ``C_bar`` (N, 3, 3) if ``with_tangent``,
        ``u`` and ``u_fluct`` (N, n_nodes, 2), ``eps`` and ``sigma`` (N, n_ip, 3), ``iterations`` (N,).
        """
        E_bars = np.atleast_2d(np.asarray(E_bars, dtype=np.float64))
        if E_bars.ndim != 2 or E_bars.shape[1] != 3:
            raise UserError(f"E_bars must have shape (N, 3); got {E_bars.shape}")
        res = [self.solve(E, **kwargs) for E in E_bars]
        keys = ("E_bar", "sigma_bar", "u", "u_fluct", "eps", "sigma")
        out = {k: np.stack([getattr(r, k) for r in res]) for k in keys}
        out["iterations"] = np.array([r.iterations for r in res])
        if with_tangent:
            out["C_bar"] = np.stack([self.homogenized_tangent(r) for r in res])
        return out


def latin_hypercube(n: int, seed: int = 0, bound: float = 0.04) -> np.ndarray:
    """n macro strains (n, 3) by Latin hypercube in [−bound, bound]³ (engineering shear)."""
    from scipy.stats import qmc

    if int(n) < 1 or not bound > 0:
        raise UserError(f"latin_hypercube needs n ≥ 1 and bound > 0; got n={n}, bound={bound}")
    return (2 * qmc.LatinHypercube(d=3, rng=np.random.default_rng(seed)).random(int(n)) - 1) * bound


def ip_image(values, n_nodes: int):
    """Integration-point values of a structured :func:`make_rve` mesh as images (for plots).

    values : (N, n_ip, C) on a mesh of n×n elements with g×g Gauss points each (quad8: g = 3 and
    3n²+4n+1 nodes; quad4: g = 2 and (n+1)² nodes), ``n_nodes`` telling them apart
    -> (N, C, n·g, n·g) tensor, indexed [x, y] like the fields of :mod:`neuropde.callbacks.plots`.
    """
    import torch

    values = torch.as_tensor(values)
    N, n_ip, C = values.shape
    for g in (3, 2):
        n = int(round((n_ip / g ** 2) ** 0.5))
        if n * n * g * g == n_ip and n_nodes == (3 * n * n + 4 * n + 1 if g == 3 else (n + 1) ** 2):
            break
    else:
        raise UserError(f"{n_ip} integration points and {n_nodes} nodes are not a structured quad8/quad4 RVE")
    # ip = (e_y·n + e_x)·g² + q_y·g + q_x: elements row by row, Gauss points x fastest
    v = values.reshape(N, n, n, g, g, C)  # [N, e_y, e_x, q_y, q_x, C]
    return v.permute(0, 5, 2, 4, 1, 3).reshape(N, C, n * g, n * g)
