"""Classical Krylov baselines for symmetric positive (semi-)definite sparse systems: (P)CG in torch,
Jacobi and IC(0) preconditioners.

These are the baselines of learned solvers such as DCDM (CG, incomplete-Cholesky PCG) on the
pressure-Poisson systems of :mod:`neuropde.pde.poisson`. Every solver returns a :class:`SolveResult`
with the iterate, iteration and mat-vec counts, wall time and the relative residual history, so
learned and classical methods are compared on the same footing.

Singular systems (closed, pure-Neumann fluid regions)
-----------------------------------------------------
CG on a consistent singular SPSD system converges to a solution as long as every vector it
builds stays in range(A). In floating point the null-space (constant) components of ``b``, of the
preconditioned residual ``z = M r`` (no preconditioner here keeps range(A) invariant) and of the
rounding in ``r`` grow and stall the residual. Pass ``project`` (e.g. a
:class:`~neuropde.pde.poisson.PoissonSystem`) and :func:`cg` removes the constant mode per closed
region from ``b``, ``x0``, every ``r`` and ``z``, and from the returned ``x``, which is then the
solution with zero mean on each closed region. That is PCG with the preconditioner
``P M P`` (``P`` the orthogonal projector onto range(A)), which is SPD on range(A).
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

__all__ = ["SolveResult", "cg", "jacobi_preconditioner", "incomplete_cholesky", "IncompleteCholesky"]


@dataclass
class SolveResult:
    """Outcome of an iterative solve.

    Attributes
    ----------
    x : Tensor (n,), the final iterate (projected onto range(A) when a projection was given).
    iterations : number of iterations taken (search directions used).
    residuals : relative residual norms ``‖r_k‖ / ‖b‖`` for k = 0..iterations (so
        ``len(residuals) == iterations + 1``); the recursively updated residual, or the true
        ``b − A x_k`` when the solver was asked for it. ``b`` is the (projected) right-hand side.
    converged : whether ``residuals[-1] <= tol``.
    seconds : wall time of the iteration (preconditioner set-up excluded: it is built beforehand).
    matvecs : number of products with A.
    message : why the solve stopped early without converging ("" otherwise).
    """

    x: torch.Tensor
    iterations: int
    residuals: list = field(default_factory=list)
    converged: bool = False
    seconds: float = 0.0
    matvecs: int = 0
    message: str = ""


# --------------------------------------------------------------------------------------------------
# conversions
# --------------------------------------------------------------------------------------------------
def _scipy_to_torch(A: sp.spmatrix, dtype, device) -> torch.Tensor:
    A = sp.csr_matrix(A)
    A.sort_indices()
    with warnings.catch_warnings():
        # torch's one-time "sparse CSR support is in beta" notice says nothing about this use
        warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta.*")
        return torch.sparse_csr_tensor(
            torch.from_numpy(A.indptr.astype(np.int64)), torch.from_numpy(A.indices.astype(np.int64)),
            torch.from_numpy(np.asarray(A.data, dtype=np.float64)), size=A.shape, dtype=dtype, device=device,
            check_invariants=False)


def _to_scipy(A) -> sp.csr_matrix:
    """scipy CSR float64 from a scipy sparse matrix, a torch sparse (CSR/COO) or dense tensor, or an ndarray."""
    if sp.issparse(A):
        return sp.csr_matrix(A, dtype=np.float64)
    if isinstance(A, torch.Tensor):
        if A.layout == torch.sparse_csr:
            return sp.csr_matrix((A.values().detach().cpu().double().numpy(),
                                  A.col_indices().cpu().numpy(), A.crow_indices().cpu().numpy()),
                                 shape=tuple(A.shape))
        if A.layout == torch.sparse_coo:
            A = A.coalesce()
            i = A.indices().cpu().numpy()
            return sp.csr_matrix((A.values().detach().cpu().double().numpy(), (i[0], i[1])), shape=tuple(A.shape))
        return sp.csr_matrix(A.detach().cpu().double().numpy())
    if isinstance(A, np.ndarray):
        return sp.csr_matrix(A.astype(np.float64))
    raise TypeError(f"expected a scipy sparse matrix, a torch tensor or an ndarray; got {type(A).__name__}")


def _as_operator(A, dtype, device) -> Callable[[torch.Tensor], torch.Tensor]:
    """v -> A v for a torch tensor (sparse or dense), a scipy sparse matrix, or a callable."""
    if isinstance(A, torch.Tensor):
        A = A.to(dtype=dtype, device=device)
        return lambda v: torch.mv(A, v)
    if sp.issparse(A):
        At = _scipy_to_torch(A, dtype, device)
        return lambda v: torch.mv(At, v)
    if callable(A):
        return A
    raise TypeError(f"A must be a torch tensor, a scipy sparse matrix or a callable v -> A v; got {type(A).__name__}")


def _as_projection(project):
    if project is None:
        return None
    if hasattr(project, "project_out_nullspace"):  # a PoissonSystem
        return project.project_out_nullspace
    if callable(project):
        return project
    raise TypeError("project must be None, a callable v -> P v, or an object with project_out_nullspace")


# --------------------------------------------------------------------------------------------------
# conjugate gradients
# --------------------------------------------------------------------------------------------------
def cg(A, b, tol: float = 1e-8, maxiter: int = 1000, x0=None, M: Callable | None = None, project=None,
       true_residual: bool = False, dtype: torch.dtype = torch.float64) -> SolveResult:
    """(Preconditioned) conjugate gradients for SPD or consistent SPSD ``A x = b``, in torch.

    Parameters
    ----------
    A : torch sparse CSR (or any torch tensor), scipy sparse matrix (converted to torch CSR), or a
        callable ``v (n,) -> A v (n,)``.
    b : Tensor or ndarray (n,).
    tol : stop when ``‖r_k‖ ≤ tol · ‖b‖`` (b after projection).
    maxiter : at most this many iterations; reaching it returns ``converged=False`` (no exception).
    x0 : initial guess (n,), default zero.
    M : preconditioner, a callable ``r (n,) -> z ≈ A⁻¹ r`` that must be symmetric positive definite
        (e.g. :func:`jacobi_preconditioner`, :func:`incomplete_cholesky`); None for plain CG.
    project : None, a :class:`~neuropde.pde.poisson.PoissonSystem`, or a callable ``v -> P v``
        removing the null space (see the module docstring); needed for singular systems.
    true_residual : record and test ``‖b − A x_k‖`` (one extra mat-vec per iteration, as DCDM's
        solver does) instead of the recursive residual. The recurrence itself is unchanged.
    dtype : working precision (float64 by default); the result is on b's device.

    Returns
    -------
    SolveResult
    """
    t0 = time.perf_counter()
    if int(maxiter) < 0:
        raise ValueError(f"maxiter must be ≥ 0; got {maxiter}")
    if not tol > 0:
        raise ValueError(f"tol must be positive; got {tol}")
    b = torch.as_tensor(b)
    device = b.device
    b = b.to(dtype=dtype)
    if b.dim() != 1:
        raise ValueError(f"b must be a vector (n,); got shape {tuple(b.shape)} (batched solves are not supported)")
    matvec = _as_operator(A, dtype, device)
    P = _as_projection(project)
    proj = P if P is not None else (lambda v: v)
    b = proj(b)
    bnorm = torch.linalg.vector_norm(b).item()
    matvecs = 0
    if bnorm == 0.0:
        return SolveResult(x=torch.zeros_like(b), iterations=0, residuals=[0.0], converged=True,
                           seconds=time.perf_counter() - t0, matvecs=0)
    if x0 is None:
        x = torch.zeros_like(b)
        r = b.clone()
    else:
        x = proj(torch.as_tensor(x0).to(dtype=dtype, device=device)).clone()
        if x.shape != b.shape:
            raise ValueError(f"x0 must have shape {tuple(b.shape)}; got {tuple(x.shape)}")
        r = proj(b - matvec(x))
        matvecs += 1
    residuals = [torch.linalg.vector_norm(r).item() / bnorm]
    converged = residuals[0] <= tol
    message = ""
    z = proj(M(r)) if M is not None else r
    p = z.clone()
    rz = torch.dot(r, z).item()
    k = 0
    while not converged and k < maxiter:
        Ap = matvec(p)
        matvecs += 1
        pAp = torch.dot(p, Ap).item()
        if not (pAp > 0.0 and math.isfinite(pAp)):
            message = f"breakdown at iteration {k + 1}: pᵀAp = {pAp:.3e} (A not positive definite on the search space?)"
            break
        alpha = rz / pAp
        x.add_(p, alpha=alpha)
        # projecting r removes the null-space drift of the rounding in A p
        r = proj(r.sub_(Ap, alpha=alpha))
        k += 1
        if true_residual:
            rel = torch.linalg.vector_norm(proj(b - matvec(x))).item() / bnorm
            matvecs += 1
        else:
            rel = torch.linalg.vector_norm(r).item() / bnorm
        residuals.append(rel)
        if rel <= tol:
            converged = True
            break
        if not math.isfinite(rel):
            message = f"non-finite residual at iteration {k}"
            break
        z = proj(M(r)) if M is not None else r
        rz_new = torch.dot(r, z).item()
        if not (rz_new > 0.0 and math.isfinite(rz_new)):
            message = f"breakdown at iteration {k}: rᵀMr = {rz_new:.3e} (preconditioner not positive definite?)"
            break
        p = z + (rz_new / rz) * p
        rz = rz_new
    if P is not None:
        x = P(x)
    return SolveResult(x=x, iterations=k, residuals=residuals, converged=converged,
                       seconds=time.perf_counter() - t0, matvecs=matvecs, message=message)


# --------------------------------------------------------------------------------------------------
# preconditioners
# --------------------------------------------------------------------------------------------------
def jacobi_preconditioner(A) -> Callable:
    """Diagonal (Jacobi) preconditioner ``r -> r / diag(A)``.

    ``A`` : torch sparse CSR/COO or dense tensor, scipy sparse matrix, or ndarray. A zero diagonal
    entry (an all-zero row, e.g. a fluid cell boxed in by solid on every side) is treated as 1.
    The callable takes a Tensor (..., n) and returns one with its dtype and device; an ndarray
    gives an ndarray.
    """
    d = _to_scipy(A).diagonal()
    inv = np.where(d != 0, 1.0 / np.where(d != 0, d, 1.0), 1.0)
    inv_t = torch.from_numpy(inv)
    cache = {}

    def apply(r):
        if isinstance(r, torch.Tensor):
            key = (r.dtype, r.device)
            if key not in cache:
                cache[key] = inv_t.to(dtype=r.dtype, device=r.device)
            return r * cache[key]
        return np.asarray(r) * inv

    return apply


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + l)`` over (starts, lengths), vectorised."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(starts - offsets, lengths) + np.arange(total)


class _IC0Pattern:
    """Symbolic phase of IC(0) on the lower triangle of a symmetric CSR matrix.

    Up-looking IC(0): for row i and each lower entry j (ascending),
    ``l_ij = (a_ij − Σ_k l_ik l_jk) / l_jj`` over columns ``k < j`` in the patterns of both rows
    i and j, then ``l_ii = sqrt(a_ii − Σ_j l_ij²)``. Each ``k`` of that sum closes a triangle
    ``(i, j, k)`` in the matrix graph; grid Laplacians (5-/7-point) have none (their graph is
    bipartite), so the sum vanishes there, but general patterns are handled.

    Row i depends on the rows j of its lower entries, so rows are grouped into *levels* (a
    topological sort of that DAG: level(i) = 1 + max level(j)); all rows of a level are factored
    at once with numpy, one column position at a time. For an N³ grid in lexicographic order the
    levels are the anti-diagonal planes, 3N − 2 of them, so the Python loop runs O(N) times.
    """

    def __init__(self, A: sp.csr_matrix):
        n = A.shape[0]
        self.n = n
        self.diag = A.diagonal().astype(np.float64)
        lower = sp.tril(A, k=-1, format="csr")
        lower.eliminate_zeros()
        lower.sort_indices()
        self.indptr = lower.indptr.astype(np.int64)
        self.cols = lower.indices.astype(np.int64)
        self.values = lower.data.astype(np.float64)
        self.rowlen = np.diff(self.indptr)
        m = self.cols.size
        rows = np.repeat(np.arange(n, dtype=np.int64), self.rowlen)
        # rows whose A-row is entirely zero (diagonal and off-diagonal): pure null space, unit pivot
        # (sums of |a_ij|, not stored-entry counts: assembly may store an explicit 0 diagonal)
        self.zero_rows = np.asarray(abs(A).sum(axis=1)).ravel() == 0

        # triangles: entries e1 = (i, k) and e2 = (i, j) of one row with k < j, and (j, k) present
        keys = rows * n + self.cols  # sorted, because CSR rows are sorted and row-major
        tgt, e_ik, e_jk = [], [], []
        maxlen = int(self.rowlen.max()) if m else 0
        for p2 in range(1, maxlen):
            r2 = np.flatnonzero(self.rowlen > p2)
            for p1 in range(p2):
                e1 = self.indptr[r2] + p1
                e2 = self.indptr[r2] + p2
                key = self.cols[e2] * n + self.cols[e1]
                pos = np.minimum(np.searchsorted(keys, key), max(m - 1, 0))
                hit = keys[pos] == key
                tgt.append(e2[hit])
                e_ik.append(e1[hit])
                e_jk.append(pos[hit])
        if tgt and sum(t.size for t in tgt):
            tgt, e_ik, e_jk = (np.concatenate(a) for a in (tgt, e_ik, e_jk))
            order = np.argsort(tgt, kind="stable")
            self.tri_ik, self.tri_jk = e_ik[order], e_jk[order]
            self.tri_ptr = np.concatenate([[0], np.cumsum(np.bincount(tgt, minlength=m))])
        else:
            self.tri_ptr = None

        # levels by Kahn's algorithm on the dependency DAG i -> j (j < i, a_ij != 0)
        upper = lower.T.tocsr()  # row j lists the rows i that depend on j
        up_ptr, up_idx = upper.indptr.astype(np.int64), upper.indices.astype(np.int64)
        remaining = self.rowlen.copy()
        frontier = np.flatnonzero(remaining == 0)
        self.levels = []
        while frontier.size:
            self.levels.append(frontier)
            children = up_idx[_ranges(up_ptr[frontier], up_ptr[frontier + 1] - up_ptr[frontier])]
            if children.size == 0:
                break
            uniq, counts = np.unique(children, return_counts=True)
            remaining[uniq] -= counts
            frontier = uniq[remaining[uniq] == 0]
        if sum(lv.size for lv in self.levels) != n:  # cannot happen for a lower-triangular pattern
            raise RuntimeError("IC(0) level scheduling did not reach every row")

    def factor(self, shift: float) -> tuple[np.ndarray, np.ndarray] | int:
        """Numeric phase on ``A + shift·diag(A)``: (l offdiag (m,), l_ii (n,)), or the first row
        whose pivot is not positive (breakdown)."""
        a = self.diag * (1.0 + shift)
        l = np.zeros_like(self.values)
        ldiag = np.zeros(self.n)
        for R in self.levels:
            lens = self.rowlen[R]
            starts = self.indptr[R]
            for p in range(int(lens.max())):
                E = starts[lens > p] + p
                val = self.values[E]
                if self.tri_ptr is not None:
                    tlen = self.tri_ptr[E + 1] - self.tri_ptr[E]
                    t = _ranges(self.tri_ptr[E], tlen)
                    if t.size:
                        prod = l[self.tri_ik[t]] * l[self.tri_jk[t]]
                        val = val - np.bincount(np.repeat(np.arange(E.size), tlen), prod, minlength=E.size)
                l[E] = val / ldiag[self.cols[E]]
            E = _ranges(starts, lens)
            sq = np.bincount(np.repeat(np.arange(R.size), lens), l[E] ** 2, minlength=R.size)
            d = a[R] - sq
            d = np.where(self.zero_rows[R], 1.0, d)
            # a pivot that lost all but ~1e-12 of its diagonal is numerically zero: call it breakdown
            bad = ~(d > 1e-12 * np.abs(a[R]))
            if bad.any():
                return int(R[np.argmax(bad)])
            ldiag[R] = np.sqrt(d)
        return l, ldiag


class IncompleteCholesky:
    """IC(0) preconditioner ``r -> (L Lᵀ)⁻¹ r``; build it with :func:`incomplete_cholesky`.

    Attributes
    ----------
    L : scipy CSR (n, n), lower triangular with the sparsity pattern of tril(A).
    shift : the diagonal shift α actually used (``L Lᵀ ≈ A + α·diag(A)``); 0 unless IC(0) broke down.
    factor_seconds : wall time of :func:`incomplete_cholesky` (symbolic + numeric phases and the
        SuperLU set-up of the triangular solves, which dominates: ~0.5 s of ~0.7 s at 64³).
    """

    def __init__(self, L: sp.csr_matrix, shift: float, started: float):
        self.L = L
        self.shift = float(shift)
        self.n = L.shape[0]
        # SuperLU of a triangular matrix in natural order with diagonal pivots is the matrix itself
        # (no fill, no pivoting); its compiled solve is ~10× faster per call than spsolve_triangular
        # (which re-validates the matrix each time), and trans="T" gives the solve with Lᵀ for free.
        self._lu = spla.splu(L.tocsc(), permc_spec="NATURAL", diag_pivot_thresh=0.0,
                             options=dict(SymmetricMode=True))
        self.factor_seconds = time.perf_counter() - started

    def solve(self, r: np.ndarray) -> np.ndarray:
        """``(L Lᵀ)⁻¹ r`` for r (n,) or (n, k), float64 ndarray."""
        return self._lu.solve(self._lu.solve(r), trans="T")

    def __call__(self, r):
        """Apply to a Tensor or ndarray (..., n); returns the same kind (Tensor: r's dtype/device)."""
        is_tensor = isinstance(r, torch.Tensor)
        arr = r.detach().cpu().double().numpy() if is_tensor else np.asarray(r, dtype=np.float64)
        if arr.shape[-1] != self.n:
            raise ValueError(f"r must end in n = {self.n}; got shape {arr.shape}")
        lead = arr.shape[:-1]
        flat = np.ascontiguousarray(arr.reshape(-1, self.n).T)
        z = self.solve(flat if flat.shape[1] > 1 else flat[:, 0])
        z = z.reshape(self.n, -1).T.reshape(lead + (self.n,))
        return torch.from_numpy(np.ascontiguousarray(z)).to(dtype=r.dtype, device=r.device) if is_tensor else z


def incomplete_cholesky(A, shift: float = 0.0, max_tries: int = 8) -> IncompleteCholesky:
    """Zero fill-in incomplete Cholesky, IC(0), of a symmetric matrix, as a PCG preconditioner.

    Neither scipy nor any other dependency of the project provides an incomplete Cholesky
    (scipy has only ``spilu``, an incomplete LU that ignores symmetry and whose drop rules do not
    reproduce IC(0)), so the factorisation is written here: ``L`` has exactly the pattern of
    ``tril(A)`` and ``(L Lᵀ)_ij = a_ij`` on that pattern. It runs level by level with numpy (see
    ``_IC0Pattern``); a 64³ grid Laplacian (262k unknowns) factors in about a second on one core.
    The two triangular solves per application use SuperLU on the triangular factor.

    Breakdown: IC(0) exists for M-matrices such as the pressure-Poisson matrix, but a general SPD
    matrix can produce a non-positive pivot (the remaining pivot of a singular block can also be
    numerically zero). Then the factorisation is retried on ``A + α·diag(A)`` with
    ``α = 1e-3, 1e-2, …`` (Manteuffel's shift; ×10 each try, at most ``max_tries`` tries) and a
    ``RuntimeWarning`` names the α used; the preconditioner stays SPD, only somewhat weaker.
    Rows of A that are entirely zero (an isolated fluid cell) get a unit pivot.

    Parameters
    ----------
    A : scipy sparse (n, n) symmetric (a torch sparse tensor is converted); only its lower
        triangle and diagonal are read.
    shift : initial α (0: plain IC(0)).
    max_tries : factorisation attempts before giving up with ValueError.

    Returns
    -------
    IncompleteCholesky, a callable ``r -> z`` for :func:`cg`'s ``M``.
    """
    t0 = time.perf_counter()
    A = _to_scipy(A)
    if A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be square; got shape {A.shape}")
    A.sum_duplicates()
    if np.any(A.diagonal() < 0):
        raise ValueError("A has a negative diagonal entry, so it is not positive semi-definite")
    pattern = _IC0Pattern(A)
    alpha = float(shift)
    if int(max_tries) < 1:
        raise ValueError(f"max_tries must be ≥ 1; got {max_tries}")
    for attempt in range(int(max_tries)):
        out = pattern.factor(alpha)
        if not isinstance(out, int):
            break
        if attempt + 1 == int(max_tries):
            raise ValueError(f"IC(0) broke down {max_tries} times (last shift {alpha:g}, non-positive pivot "
                             f"at row {out}); is A symmetric positive semi-definite?")
        new_alpha = 1e-3 if alpha == 0.0 else 10.0 * alpha
        warnings.warn(f"IC(0) broke down (non-positive pivot at row {out}) with shift {alpha:g}; "
                      f"retrying on A + {new_alpha:g}·diag(A)", RuntimeWarning, stacklevel=2)
        alpha = new_alpha
    l, ldiag = out
    n = A.shape[0]
    L = sp.csr_matrix((l, pattern.cols, pattern.indptr), shape=(n, n)) + sp.diags(ldiag, format="csr")
    L.sort_indices()
    return IncompleteCholesky(L, alpha, started=t0)
