"""Pressure-Poisson systems (neuropde.pde.poisson) and the Krylov baselines (neuropde.solvers)."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from neuropde.pde.poisson import (
    EMPTY, FLUID, SOLID, assemble, box_with_obstacles, cell_centres, divergence_rhs, empty_box,
    mac_divergence, random_rhs, smoke_like, solve_direct, subtract_pressure_gradient,
)
from neuropde.solvers import cg, incomplete_cholesky, jacobi_preconditioner

PI = math.pi


# Small sparse problems: intra-op threads only add barrier stalls on a shared machine.
pytestmark = pytest.mark.usefixtures("one_thread")


def _three_closed_regions(dim: int) -> np.ndarray:
    """A box cut in two by a SOLID wall, plus one fluid cell walled in on every side: 3 closed regions."""
    N = 10 if dim == 2 else 7
    flags = empty_box(N, dim)
    flags[3] = SOLID  # wall across axis 0 (x = 3): regions x < 3 and x > 3
    pocket = (N - 2,) * dim
    around = tuple(slice(c - 1, c + 2) for c in pocket)
    flags[around] = SOLID
    flags[pocket] = FLUID  # a single cell: an all-zero row of A
    return flags


def _eigenvalues(system):
    return np.linalg.eigvalsh(system.matrix_scipy().toarray())


# --------------------------------------------------------------------------------------------------
# assembly
# --------------------------------------------------------------------------------------------------
def test_flag_encoding_and_hand_assembled_matrix():
    assert (FLUID, SOLID, EMPTY) == (0, 1, 2)
    flags = np.array([[FLUID, FLUID, SOLID],
                      [FLUID, EMPTY, FLUID],
                      [FLUID, FLUID, FLUID]])
    s = assemble(flags)
    # unknowns in row-major order: (0,0) (0,1) (1,0) (1,2) (2,0) (2,1) (2,2)
    expected = np.array([
        [2, -1, -1, 0, 0, 0, 0],   # (0,0): two fluid neighbours, two walls
        [-1, 2, 0, 0, 0, 0, 0],    # (0,1): fluid + EMPTY below counts, SOLID right and wall do not
        [-1, 0, 3, 0, -1, 0, 0],   # (1,0): two fluid + EMPTY
        [0, 0, 0, 2, 0, 0, -1],    # (1,2): EMPTY + fluid below; SOLID above adds nothing
        [0, 0, -1, 0, 2, -1, 0],
        [0, 0, 0, 0, -1, 3, -1],   # (2,1): EMPTY above counts
        [0, 0, 0, -1, 0, -1, 2],
    ], dtype=float)
    np.testing.assert_array_equal(s.matrix_scipy().toarray(), expected)
    assert s.n == 7 and s.regions == [] and not s.is_singular  # touches EMPTY: definite
    np.testing.assert_array_equal(s.index, [[0, 1, -1], [2, -1, 3], [4, 5, 6]])
    # scaling by 1/h² = N², torch copy equal
    s2 = assemble(flags, scaled=True)
    np.testing.assert_allclose(s2.matrix_scipy().toarray(), 9 * expected)
    assert s2.rhs_scale == 1.0 and s.rhs_scale == pytest.approx(1 / 9)
    A_t = s.matrix_torch()
    assert A_t.layout == torch.sparse_csr and A_t.dtype == torch.float64
    np.testing.assert_array_equal(A_t.to_dense().numpy(), expected)


@pytest.mark.parametrize("dim", [2, 3])
def test_symmetric_semidefinite_with_one_null_vector_per_closed_region(dim):
    flags = _three_closed_regions(dim)
    s = assemble(flags)
    A = s.matrix_scipy()
    assert abs(A - A.T).max() == 0.0
    assert len(s.regions) == 3 and sorted(r.size for r in s.regions)[0] == 1
    lam = _eigenvalues(s)
    assert lam.min() > -1e-10  # semi-definite
    n_zero = int(np.sum(np.abs(lam) < 1e-10))
    assert n_zero == 3, lam[:5]
    assert lam[n_zero] > 1e-3  # a clear gap: the null space is exactly the region constants
    basis = s.nullspace_basis()
    assert np.abs(A @ basis).max() < 1e-12
    np.testing.assert_allclose(basis.T @ basis, np.eye(3), atol=1e-12)

    # an EMPTY cell next to one region makes that region definite: one null vector fewer
    flags_open = flags.copy()
    flags_open[(0,) * dim] = EMPTY
    s_open = assemble(flags_open)
    assert len(s_open.regions) == 2
    assert int(np.sum(np.abs(_eigenvalues(s_open)) < 1e-10)) == 2

    # EMPTY next to every region (the pocket opened to the air): positive definite
    flags_def = flags_open.copy()
    flags_def[(slice(None),) * (dim - 1) + (-1,)] = EMPTY  # top layer of both halves
    pocket = (flags.shape[0] - 2,) * dim
    flags_def[pocket[:-1] + (pocket[-1] + 1,)] = EMPTY
    s_def = assemble(flags_def)
    assert s_def.regions == [] and not s_def.is_singular
    assert _eigenvalues(s_def).min() > 1e-3


def test_pure_neumann_box_has_constant_null_space():
    s = assemble(empty_box(6, 3))
    assert len(s.regions) == 1 and s.regions[0].size == 216
    lam = _eigenvalues(s)
    assert abs(lam[0]) < 1e-10 and lam[1] > 1e-2
    np.testing.assert_allclose(s.matrix_scipy() @ np.ones(s.n), 0.0, atol=1e-13)


def test_grid_maps_and_nullspace_projection():
    s = assemble(_three_closed_regions(2))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, s.n))
    grid = s.to_grid(x, fill=np.nan)
    assert grid.shape == (2, 10, 10)
    assert np.isnan(grid[:, s.flags != FLUID]).all()
    np.testing.assert_array_equal(s.from_grid(grid), x)
    xt = torch.from_numpy(x)
    assert torch.equal(s.from_grid(s.to_grid(xt)), xt)

    y = s.project_out_nullspace(x)
    assert np.abs(y @ s.nullspace_basis()).max() < 1e-12  # orthogonal to every null vector
    np.testing.assert_allclose(s.project_out_nullspace(y), y, atol=1e-14)  # idempotent
    np.testing.assert_allclose(x - y, (x @ s.nullspace_basis()) @ s.nullspace_basis().T, atol=1e-12)
    yt = s.project_out_nullspace(xt)
    assert isinstance(yt, torch.Tensor)
    np.testing.assert_allclose(yt.numpy(), y, atol=1e-14)
    # a definite system has nothing to remove
    s_def = assemble(smoke_like(8, 2, 0))
    v = rng.standard_normal(s_def.n)
    assert s_def.project_out_nullspace(v) is v


# --------------------------------------------------------------------------------------------------
# manufactured solutions: second order
# --------------------------------------------------------------------------------------------------
def _neumann_error(N: int, dim: int) -> float:
    """u = Π cos(πx_d) on the closed box: ∂u/∂n = 0 on the walls, −Δu = dim π² u."""
    s = assemble(empty_box(N, dim), scaled=True)
    u = np.prod([np.cos(PI * x) for x in cell_centres(N, dim)], axis=0)
    x = solve_direct(s, s.from_grid(dim * PI ** 2 * u) * s.rhs_scale)
    return float(np.abs(x - s.from_grid(u)).max())  # u has zero discrete mean: same representative


def _dirichlet_error(N: int, dim: int) -> float:
    """EMPTY frame: p = 0 at the frame's cell centres, so the domain is [h/2, 1 − h/2]^dim;
    u = Π sin(π(x_d − h/2)/L), L = 1 − h, −Δu = dim (π/L)² u. Unscaled system (b = h² f)."""
    flags = empty_box(N, dim)
    for axis in range(dim):
        for end in (0, -1):
            idx = [slice(None)] * dim
            idx[axis] = end
            flags[tuple(idx)] = EMPTY
    s = assemble(flags, scaled=False)
    assert not s.is_singular
    h, L = 1.0 / N, 1.0 - 1.0 / N
    u = np.prod([np.sin(PI * (x - h / 2) / L) for x in cell_centres(N, dim)], axis=0)
    x = solve_direct(s, s.from_grid(dim * (PI / L) ** 2 * u) * s.rhs_scale)
    return float(np.abs(x - s.from_grid(u)).max())


@pytest.mark.parametrize("kind", ["neumann", "dirichlet"])
@pytest.mark.parametrize("dim,sizes", [(2, (16, 32, 64)), (3, (8, 16, 32))])
def test_manufactured_solution_converges_at_second_order(kind, dim, sizes):
    error = _neumann_error if kind == "neumann" else _dirichlet_error
    errors = np.array([error(N, dim) for N in sizes])
    orders = np.log2(errors[:-1] / errors[1:])
    assert np.all((orders >= 1.8) & (orders <= 2.2)), (errors, orders)
    assert errors[-1] < 2e-3


@pytest.mark.parametrize("scaled", [False, True])
@pytest.mark.parametrize("domain", ["obstacles", "smoke"])
def test_projection_makes_the_velocity_divergence_free(scaled, domain):
    flags = box_with_obstacles(24, 2, 3, 5) if domain == "obstacles" else smoke_like(10, 3, 5)
    s = assemble(flags, scaled=scaled)
    b, faces = divergence_rhs(s, 7, return_velocity=True)
    div0 = np.abs(s.from_grid(mac_divergence(s, faces))).max()
    assert div0 > 1.0  # a genuinely divergent field
    for r in s.regions:  # closed regions: compatible before the rounding projection
        assert abs(b[r].sum()) < 1e-10 * np.abs(b).sum()
    p = solve_direct(s, b)
    div = np.abs(s.from_grid(mac_divergence(s, subtract_pressure_gradient(s, faces, p)))).max()
    assert div < 1e-9 * div0
    # the same physical pressure, scaled or not
    other = assemble(flags, scaled=not scaled)
    np.testing.assert_allclose(solve_direct(other, divergence_rhs(other, 7)), p, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# Krylov solvers
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def obstacle_problem():
    s = assemble(box_with_obstacles(16, 3, 4, 0))
    b = divergence_rhs(s, 1)
    return s, b, solve_direct(s, b)


def test_cg_jacobi_and_ic_reach_tolerance_and_match_direct(obstacle_problem):
    s, b, x_ref = obstacle_problem
    assert s.is_singular  # exercises the null-space handling
    A, A_sp = s.matrix_torch(), s.matrix_scipy()
    results = {
        "cg": cg(A, b, tol=1e-8, maxiter=2000, project=s),
        "jacobi": cg(A, b, tol=1e-8, maxiter=2000, M=jacobi_preconditioner(A), project=s),
        "ic": cg(A, b, tol=1e-8, maxiter=2000, M=incomplete_cholesky(A_sp), project=s),
    }
    for name, r in results.items():
        assert r.converged and r.message == "", name
        assert len(r.residuals) == r.iterations + 1 and r.residuals[0] == pytest.approx(1.0)
        assert r.residuals[-1] <= 1e-8 and min(r.residuals[:-1]) > 1e-8
        assert r.matvecs == r.iterations and r.seconds > 0
        x = r.x.numpy()
        assert np.linalg.norm(b - A_sp @ x) <= 1e-7 * np.linalg.norm(b), name
        assert np.linalg.norm(x - x_ref) <= 1e-6 * np.linalg.norm(x_ref), name
    assert results["ic"].iterations < 0.5 * results["cg"].iterations, {k: r.iterations for k, r in results.items()}


def test_cg_stops_at_maxiter_without_exception(obstacle_problem):
    s, b, _ = obstacle_problem
    r = cg(s.matrix_torch(), b, tol=1e-8, maxiter=5, project=s)
    assert not r.converged and r.iterations == 5 and len(r.residuals) == 6
    assert r.residuals[-1] > 1e-8
    r0 = cg(s.matrix_torch(), b, tol=1e-8, maxiter=0, project=s)
    assert not r0.converged and r0.iterations == 0 and torch.equal(r0.x, torch.zeros(s.n, dtype=torch.float64))


def test_nullspace_projection_is_needed_for_incompatible_rhs(obstacle_problem):
    s, b, x_ref = obstacle_problem
    A = s.matrix_torch()
    b_bad = b + 0.3 * np.linalg.norm(b) / math.sqrt(s.n)  # add a constant: no solution exists
    stalled = cg(A, b_bad, tol=1e-8, maxiter=300)
    assert not stalled.converged and min(stalled.residuals) > 0.1
    ok = cg(A, b_bad, tol=1e-8, maxiter=300, M=incomplete_cholesky(s.matrix_scipy()), project=s)
    assert ok.converged
    np.testing.assert_allclose(ok.x.numpy(), x_ref, rtol=0, atol=1e-6 * np.abs(x_ref).max())


def test_cg_operator_forms_true_residual_and_x0():
    s = assemble(smoke_like(12, 3, 3))  # open top: definite, no projection needed
    assert not s.is_singular
    b = random_rhs(s, 4)
    A_sp = s.matrix_scipy()
    r_callable = cg(lambda v: torch.from_numpy(A_sp @ v.numpy()), b, tol=1e-10, maxiter=500)
    r_scipy = cg(A_sp, torch.from_numpy(b), tol=1e-10, maxiter=500, true_residual=True)
    assert r_callable.converged and r_scipy.converged
    assert r_scipy.matvecs == 2 * r_scipy.iterations
    np.testing.assert_allclose(r_callable.x.numpy(), r_scipy.x.numpy(), atol=1e-8)
    np.testing.assert_allclose(r_scipy.x.numpy(), solve_direct(s, b), atol=1e-8)
    warm = cg(A_sp, b, tol=1e-8, maxiter=500, x0=r_scipy.x)  # already solved: no iteration
    assert warm.converged and warm.iterations == 0 and warm.matvecs == 1
    zero = cg(A_sp, np.zeros(s.n))
    assert zero.converged and zero.iterations == 0 and not zero.x.any()


def test_isolated_fluid_cell_is_handled_by_preconditioners():
    s = assemble(_three_closed_regions(2))
    b = random_rhs(s, 0, smooth=False)
    A = s.matrix_torch()
    for M in (jacobi_preconditioner(A), incomplete_cholesky(s.matrix_scipy())):
        r = cg(A, b, tol=1e-10, maxiter=500, M=M, project=s)
        assert r.converged
        np.testing.assert_allclose(r.x.numpy(), solve_direct(s, b), atol=1e-8)


# --------------------------------------------------------------------------------------------------
# IC(0)
# --------------------------------------------------------------------------------------------------
def _dense_ic0(A: np.ndarray) -> np.ndarray:
    """Textbook up-looking IC(0), one entry at a time."""
    n = A.shape[0]
    L = np.zeros_like(A)
    for i in range(n):
        for j in range(i):
            if A[i, j] != 0:
                L[i, j] = (A[i, j] - L[i, :j] @ L[j, :j]) / L[j, j]
        L[i, i] = math.sqrt(A[i, i] - L[i, :i] @ L[i, :i])
    return L


def test_ic0_keeps_pattern_and_matches_A_on_it():
    A = assemble(box_with_obstacles(20, 2, 3, 2)).matrix_scipy()
    ic = incomplete_cholesky(A)
    assert ic.shift == 0.0
    L = ic.L
    assert abs(sp.triu(L, k=1)).max() == 0.0
    pattern = (abs(A) > 0).astype(float)
    assert ((abs(sp.tril(L)) > 0).astype(float) - sp.tril(pattern)).nnz == 0  # no fill-in
    # (L Lᵀ)_ij = a_ij on the pattern of A, and something is dropped outside it
    LLt = (L @ L.T).tocsr()
    assert abs((LLt - A).multiply(pattern)).max() < 1e-13
    assert abs(LLt - A).max() > 1e-3
    # the preconditioner is symmetric: (M r1)·r2 = r1·(M r2)
    rng = np.random.default_rng(0)
    r1, r2 = rng.standard_normal((2, A.shape[0]))
    assert ic(r1) @ r2 == pytest.approx(r1 @ ic(r2), rel=1e-12)
    np.testing.assert_allclose(LLt @ ic(r1), r1, atol=1e-11)
    # torch in, torch out (same dtype)
    z = ic(torch.from_numpy(r1).float())
    assert z.dtype == torch.float32


def test_ic0_general_pattern_with_triangles_matches_dense_reference():
    """A random sparse pattern has triangles (k < j < i all coupled): the l_ik l_jk terms matter."""
    rng = np.random.default_rng(3)
    n = 40
    B = sp.random(n, n, density=0.1, random_state=1).toarray()
    S = B + B.T
    S[S != 0] *= np.where(rng.random(np.count_nonzero(S)) < 0.5, 1.0, -1.0)
    S = np.triu(S, 1) + np.triu(S, 1).T
    A = S + np.diag(np.abs(S).sum(1) + 0.5)  # strictly diagonally dominant: IC(0) exists
    G = (S != 0).astype(int)
    assert np.trace(G @ G @ G) > 0  # the graph really has triangles
    ic = incomplete_cholesky(sp.csr_matrix(A))
    np.testing.assert_allclose(ic.L.toarray(), _dense_ic0(A), rtol=1e-12, atol=1e-14)


def test_ic0_breakdown_falls_back_to_a_shift_with_a_warning():
    # Kershaw's SPD matrix: IC(0) meets a negative pivot
    A = sp.csr_matrix(np.array([[3, -2, 0, 2], [-2, 3, -2, 0], [0, -2, 3, -2], [2, 0, -2, 3]], dtype=float))
    assert np.linalg.eigvalsh(A.toarray()).min() > 0
    with pytest.warns(RuntimeWarning, match="IC\\(0\\) broke down"):
        ic = incomplete_cholesky(A)
    assert ic.shift > 0
    b = np.array([1.0, -2.0, 0.5, 3.0])
    r = cg(A, b, tol=1e-12, maxiter=20, M=ic)
    assert r.converged
    np.testing.assert_allclose(r.x.numpy(), np.linalg.solve(A.toarray(), b), atol=1e-10)
    with pytest.raises(ValueError, match="broke down"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        incomplete_cholesky(A, max_tries=2)


# --------------------------------------------------------------------------------------------------
# domain generators and errors
# --------------------------------------------------------------------------------------------------
def test_generators_are_reproducible_and_have_documented_flags():
    e = empty_box(8, 2)
    assert e.shape == (8, 8) and e.dtype == np.int8 and (e == FLUID).all()

    a = box_with_obstacles(24, 3, 4, 11)
    np.testing.assert_array_equal(a, box_with_obstacles(24, 3, 4, np.random.default_rng(11)))
    assert not np.array_equal(a, box_with_obstacles(24, 3, 4, 12))
    assert set(np.unique(a)) == {FLUID, SOLID}  # no EMPTY: closed, singular
    assert (box_with_obstacles(24, 3, 0, 11) == FLUID).all()
    assert assemble(a).is_singular
    # the geometry does not depend on the resolution: similar solid fractions
    fine = box_with_obstacles(48, 3, 4, 11)
    assert abs((a == SOLID).mean() - (fine == SOLID).mean()) < 0.02

    s_open = smoke_like(16, 3, 5)
    np.testing.assert_array_equal(s_open, smoke_like(16, 3, 5))
    assert (s_open[..., -1] == EMPTY).all() and not (s_open[..., :-1] == EMPTY).any()
    assert (s_open == SOLID).any() and not (s_open[..., -1] == SOLID).any()
    assert not assemble(s_open).is_singular
    s_closed = smoke_like(16, 3, 5, open_top=False)
    assert set(np.unique(s_closed)) == {FLUID, SOLID}
    np.testing.assert_array_equal(s_closed == SOLID, s_open == SOLID)
    assert len(assemble(s_closed).regions) == 1
    s2 = smoke_like(16, 2, 5)
    assert s2.shape == (16, 16) and (s2[:, -1] == EMPTY).all()

    rng = np.random.default_rng(0)
    b1 = random_rhs(assemble(a), rng)
    b2 = random_rhs(assemble(a), np.random.default_rng(0))
    np.testing.assert_array_equal(b1, b2)


@pytest.mark.parametrize("flags,match", [
    (np.zeros((4, 4), dtype=float), "integer"),
    (np.full((4, 4), 3), "unknown flag"),
    (np.zeros((4, 5), dtype=int), "square"),
    (np.zeros(4, dtype=int), r"\(N, N\)"),
    (np.zeros((2, 2, 2, 2), dtype=int), r"\(N, N\)"),
    (np.full((3, 3), SOLID), "no FLUID"),
])
def test_assemble_rejects_bad_flags(flags, match):
    with pytest.raises(ValueError, match=match):
        assemble(flags)


def test_other_errors():
    with pytest.raises(ValueError, match="dim"):
        empty_box(8, 4)
    with pytest.raises(ValueError, match="N must"):
        empty_box(1, 2)
    with pytest.raises(ValueError, match="seed"):
        box_with_obstacles(8, 2, 2, None)
    with pytest.raises(ValueError, match="n_obstacles"):
        box_with_obstacles(8, 2, -1, 0)
    s = assemble(empty_box(4, 2))
    with pytest.raises(ValueError, match="unknowns"):
        s.to_grid(np.zeros(5))
    with pytest.raises(ValueError, match="grid shape"):
        s.from_grid(np.zeros((5, 5)))
    with pytest.raises(ValueError, match="vector"):
        cg(s.matrix_torch(), np.zeros((2, 16)))
    with pytest.raises(TypeError):
        cg("not a matrix", np.ones(16))
