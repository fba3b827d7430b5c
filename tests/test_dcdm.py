"""DCDM: Ritz training vectors (neuropde.pde.ritz), the network and its loss (neuropde.models.dcdm)
and the conjugate-direction solver (neuropde.solvers.dcdm); shared/reference/dcdm.md."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from neuropde.models.dcdm import DCDMNet, apply_to_unknowns, dcdm_loss, dcdm_parameter_count, network_direction
from neuropde.pde.poisson import (
    SOLID, assemble, box_with_obstacles, divergence_rhs, empty_box, random_rhs, smoke_like, solve_direct,
)
from neuropde.pde.ritz import ritz_vectors, train_val_vectors, training_vectors
from neuropde.solvers import cg
from neuropde.solvers.dcdm import DCDMResult, dcdm_solve


# Small convolutions and sparse products: intra-op threads only add barrier stalls.
pytestmark = pytest.mark.usefixtures("one_thread")


def _definite_system():
    """Smoke scene with an open (EMPTY) top: positive definite, no projection needed."""
    return assemble(smoke_like(12, 2, rng=0, open_top=True))


def _random_direction(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return lambda r: torch.randn(n, generator=g, dtype=torch.float64)


# --------------------------------------------------------------------------------------------------
# loss
# --------------------------------------------------------------------------------------------------
def test_loss_scale_invariant_zero_at_solution_positive_otherwise():
    s = _definite_system()
    assert not s.is_singular
    A = s.matrix_torch()
    rng = np.random.default_rng(0)
    b = torch.from_numpy(rng.standard_normal((5, s.n)))
    b = b / b.norm(dim=1, keepdim=True)
    q = torch.from_numpy(rng.standard_normal((5, s.n)))
    base = dcdm_loss(q, b, A)
    assert base.item() > 0.1
    for c in (3.7, -0.01, 1e6):
        assert dcdm_loss(c * q, b, A).item() == pytest.approx(base.item(), rel=1e-10)
    exact = torch.stack([torch.from_numpy(solve_direct(s, bi)) for bi in b])
    assert dcdm_loss(exact, b, A).item() < 1e-20
    assert dcdm_loss(2.5 * exact, b, A).item() < 1e-20  # "up to an arbitrary constant"
    # the batch mean is the mean of single-sample losses (actual batch length, reference pitfall 2)
    loop = torch.stack([dcdm_loss(q[i], b[i], A) for i in range(5)]).mean()
    assert base.item() == pytest.approx(loop.item(), rel=1e-12)
    three = dcdm_loss(q[:3], b[:3], A)
    assert three.item() == pytest.approx(torch.stack([dcdm_loss(q[i], b[i], A) for i in range(3)]).mean().item(),
                                         rel=1e-12)


def test_loss_guard_gradient_and_dtype_check():
    s = assemble(empty_box(8, 2))  # pure Neumann: constants are in the null space
    A = s.matrix_torch(torch.float32)
    b = torch.from_numpy(s.project_out_nullspace(np.random.default_rng(1).standard_normal((2, s.n)))).float()
    b = b / b.norm(dim=1, keepdim=True)
    for q in (torch.zeros(2, s.n), torch.ones(2, s.n)):  # t = qᵀAq = 0 exactly or to rounding
        q.requires_grad_(True)
        loss = dcdm_loss(q, b, A)
        loss.backward()
        assert loss.item() == pytest.approx(1.0, rel=1e-5)  # no step: ‖b‖² = 1
        assert torch.isfinite(q.grad).all()
    q = torch.randn(2, s.n, requires_grad=True)
    dcdm_loss(q, b, A).backward()
    assert q.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="matrix_torch"):
        dcdm_loss(q.double(), b.double(), A)


# --------------------------------------------------------------------------------------------------
# network
# --------------------------------------------------------------------------------------------------
def test_reference_parameter_counts():
    for dim, blocks, expected in [(3, (1, 3, 2), 97_457), (3, (2, 5, 3), 152_881), (2, (1, 3, 2), 32_657)]:
        net = DCDMNet(dim, 16, *blocks)
        assert sum(p.numel() for p in net.parameters()) == expected == dcdm_parameter_count(dim, 16, *blocks)


@pytest.mark.parametrize("dim, N", [(2, 8), (2, 7), (2, 1), (3, 4), (3, 5)])
def test_network_shapes_even_and_odd(dim, N):
    torch.manual_seed(0)
    net = DCDMNet(dim, channels=4, n_full=1, n_half=1, n_up=1)
    x = torch.randn((2,) + (N,) * dim, requires_grad=True)
    y = net(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert net(x.unsqueeze(1)).shape == (2, 1) + (N,) * dim
    y.square().sum().backward()
    assert x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="grid axes"):
        net(torch.randn((2, 3) + (N,) * dim))


def test_odd_grid_pool_averages_only_inside_cells():
    """Odd N: the half-resolution input is the mean of the full-resolution features over the cells of
    each 2×2 window that lie inside the grid (the last, partial windows included: no zero padding
    dilutes them), and the output is cropped back to N."""
    torch.manual_seed(0)
    net = DCDMNet(2, channels=3, n_full=0, n_half=1, n_up=0)
    seen = {}
    hooks = [net.features.register_forward_hook(lambda m, args, out: seen.__setitem__("f", torch.relu(out))),
             net.half_blocks[0][0].register_forward_pre_hook(lambda m, args: seen.__setitem__("h", args[0]))]
    with torch.no_grad():
        out = net(torch.randn(1, 9, 9))
    for hook in hooks:
        hook.remove()
    f, h = seen["f"][0], seen["h"][0]
    assert out.shape == (1, 9, 9) and h.shape == (3, 5, 5)
    for i in range(5):
        for j in range(5):
            window = f[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2]  # slicing clips at the grid edge
            assert torch.allclose(h[:, i, j], window.mean(dim=(1, 2)), atol=1e-6)


def test_apply_to_unknowns_masks_non_fluid_cells_and_keeps_gradients():
    flags = empty_box(8, 2)
    flags[3:5, 3:5] = SOLID
    s = assemble(flags)
    net = DCDMNet(2, channels=4, n_full=1, n_half=1, n_up=1)
    seen = []
    handle = net.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    r = torch.randn(3, s.n, dtype=torch.float64, requires_grad=True)
    q = apply_to_unknowns(net, s, r)
    handle.remove()
    assert q.shape == (3, s.n) and q.dtype == torch.float64
    assert seen[0].dtype == torch.float32 and seen[0].shape == (3, 8, 8)
    assert (seen[0][:, 3:5, 3:5] == 0).all()
    q.sum().backward()
    assert r.grad is not None and r.grad.abs().sum() > 0
    single = apply_to_unknowns(net, s, r[0].detach())
    assert torch.allclose(single, q[0].detach(), atol=1e-6)
    assert network_direction(net, s)(r[0].detach()).requires_grad is False


# --------------------------------------------------------------------------------------------------
# Ritz vectors and training vectors
# --------------------------------------------------------------------------------------------------
def test_ritz_pairs_dense_and_neumann_null_space_dropped():
    s = assemble(empty_box(8, 2))
    A = s.matrix_scipy()
    values, vectors = ritz_vectors(s, m=10, rng=0)
    assert values.shape == (s.n - 1,) and vectors.shape == (s.n, s.n - 1)  # one constant mode dropped
    assert np.all(np.diff(values) >= 0) and values[0] > 1e-3
    assert np.abs(A @ vectors - vectors * values).max() < 1e-10
    assert np.abs(vectors.sum(axis=0)).max() < 1e-10  # orthogonal to the null space
    # Lanczos run to the full rank: restarts at invariant subspaces (the box spectrum is degenerate)
    lv, lV = ritz_vectors(s, m=s.n, rng=0, dense_below=0)
    assert np.allclose(lv, values, atol=1e-10)
    assert np.abs(A @ lV - lV * lv).max() < 1e-8
    assert np.abs(lV.T @ lV - np.eye(lv.size)).max() < 1e-10


def test_lanczos_matches_dense_on_the_lowest_ritz_values():
    s = assemble(box_with_obstacles(12, 2, 3, rng=1))  # obstacles: a generic, non-degenerate spectrum
    dense, _ = ritz_vectors(s, m=1, rng=0)
    values, vectors = ritz_vectors(s, m=int(0.7 * s.n), rng=0, dense_below=0)
    assert np.allclose(values[:3], dense[:3], rtol=1e-6)
    residual = np.linalg.norm(s.matrix_scipy() @ vectors[:, :3] - vectors[:, :3] * values[:3], axis=0)
    assert residual.max() < 1e-3
    assert np.abs(vectors.sum(axis=0)).max() < 1e-8  # started in range(A) and kept there


def test_training_vectors_unit_norm_disjoint_reproducible_and_smooth_biased():
    s = assemble(empty_box(8, 2))
    train, val = train_val_vectors(s, n_train=300, n_val=40, m=10, seed=3)
    assert train.shape == (300, s.n) and val.shape == (40, s.n) and train.dtype == np.float32
    assert np.allclose(np.linalg.norm(train, axis=1), 1, atol=1e-6)
    assert np.allclose(np.linalg.norm(val, axis=1), 1, atol=1e-6)
    assert not {row.tobytes() for row in train} & {row.tobytes() for row in val}
    assert np.abs(train @ val.T).max() < 0.99  # not near-copies either
    again_train, again_val = train_val_vectors(s, n_train=300, n_val=40, m=10, seed=3)
    assert np.array_equal(train, again_train) and np.array_equal(val, again_val)
    _, val_other_size = train_val_vectors(s, n_train=50, n_val=40, m=10, seed=3)
    assert np.array_equal(val, val_other_size)  # validation draws do not depend on the training set
    other_train, _ = train_val_vectors(s, n_train=300, n_val=40, m=10, seed=4)
    assert not np.array_equal(train, other_train)
    # lowest 55 % of the modes get coefficients with std 9: energy per mode 81× the others
    values, vectors = ritz_vectors(s, m=10, rng=0)
    c2 = ((training_vectors(values, vectors, 2000, rng=0) @ vectors) ** 2).mean(axis=0)
    k = int(round(0.55 * values.size))
    assert 50 < c2[:k].mean() / c2[k:].mean() < 130


# --------------------------------------------------------------------------------------------------
# solver
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("definite", [True, False])
def test_exact_inverse_direction_converges_in_one_iteration(definite):
    s = _definite_system() if definite else assemble(empty_box(12, 2))
    b = divergence_rhs(s, rng=0)
    res = dcdm_solve(s.matrix_torch(), b, lambda r: torch.from_numpy(solve_direct(s, r)), project=s)
    assert isinstance(res, DCDMResult)
    assert res.converged and res.iterations == 1 and res.residuals[-1] < 1e-10
    assert res.fallbacks == 0 and res.direction_calls == 1 and res.matvecs == 2
    assert np.allclose(res.x.numpy(), solve_direct(s, b), atol=1e-10)


def test_identity_direction_behaves_like_cg():
    s = assemble(box_with_obstacles(16, 2, 2, rng=0))
    A, b = s.matrix_torch(), torch.from_numpy(divergence_rhs(s, rng=1))
    ref = cg(A, b, tol=1e-8, maxiter=1000, project=s)
    res = dcdm_solve(A, b, lambda r: r, tol=1e-8, maxiter=1000, project=s)
    assert res.converged and ref.converged
    assert abs(res.iterations - ref.iterations) <= 3
    assert res.fallbacks == 0
    assert res.matvecs == 2 * res.iterations and res.direction_calls == res.iterations
    assert len(res.residuals) == res.iterations + 1
    assert np.allclose(res.x.numpy(), solve_direct(s, b), atol=1e-6)


def test_garbage_direction_converges_through_the_fallback_and_reports_it():
    s = assemble(empty_box(12, 2))
    A, b = s.matrix_torch(), torch.from_numpy(divergence_rhs(s, rng=0))
    cg_iters = cg(A, b, tol=1e-4, project=s).iterations
    res = dcdm_solve(A, b, _random_direction(s.n), project=s)
    assert res.converged and res.residuals[-1] <= 1e-4
    assert res.iterations <= cg_iters + 3
    assert res.fallbacks > 0 and len(res.fallback_iterations) == res.fallbacks
    assert res.matvecs == 2 * res.iterations + res.fallbacks
    # without the fallback the random directions make no real progress: the guard is what converges
    stuck = dcdm_solve(A, b, _random_direction(s.n), project=s, fallback=False)
    assert not stuck.converged and stuck.fallbacks == 0 and stuck.residuals[-1] > 0.1


def test_a_norm_error_decreases_monotonically():
    s = _definite_system()
    A, b = s.matrix_torch(), torch.from_numpy(divergence_rhs(s, rng=0))
    As, exact = s.matrix_scipy(), solve_direct(s, b)
    g = torch.Generator().manual_seed(0)
    directions = {
        # nonlinear and non-stationary (a random diagonal scaling each call): conjugacy is lost
        "random diagonal": lambda r: r * (1 + 0.9 * torch.rand(s.n, generator=g, dtype=torch.float64)),
        "garbage + fallback": _random_direction(s.n),
    }
    for name, direction in directions.items():
        errors = [float(exact @ (As @ exact))]

        def record(x):
            e = x.numpy() - exact
            errors.append(float(e @ (As @ e)))

        res = dcdm_solve(A, b, direction, tol=1e-8, maxiter=400, callback=record)
        assert res.converged, name
        assert np.all(np.diff(errors) <= 1e-12 * errors[0]), name


def test_null_space_projection_is_needed_for_an_incompatible_rhs():
    s = assemble(empty_box(12, 2))
    A = s.matrix_torch()
    b = torch.from_numpy(divergence_rhs(s, rng=0)) + 0.3  # constant offset: not in range(A)
    res = dcdm_solve(A, b, lambda r: r, project=s)
    assert res.converged
    assert abs(res.x.sum().item()) < 1e-8  # zero-mean representative
    bad = dcdm_solve(A, b, lambda r: r)
    assert not bad.converged


def test_solver_argument_errors():
    s = _definite_system()
    A, b = s.matrix_torch(), torch.ones(s.n, dtype=torch.float64)
    with pytest.raises(ValueError, match="shape"):
        dcdm_solve(A, b, lambda r: r[:-1])
    with pytest.raises(ValueError, match="lambda_max"):
        dcdm_solve(lambda v: A @ v, b, lambda r: r)
    assert dcdm_solve(lambda v: A @ v, b, lambda r: r, lambda_max=8.0, tol=1e-6).converged
    zero = dcdm_solve(A, torch.zeros(s.n), lambda r: r)
    assert zero.converged and zero.iterations == 0 and zero.direction_calls == 0


# --------------------------------------------------------------------------------------------------
# end to end
# --------------------------------------------------------------------------------------------------
def test_tiny_training_beats_cg():
    """Train DCDMNet (2-D, 8 channels) for 300 Adam steps (lr 1e-3, batch 32) on Ritz vectors of the
    16×16 Neumann box, then solve validation right-hand sides to 1e-4.

    Measured on one core (~4 s): the validation loss falls from ~1.0 to ~0.06; DCDM needs 15–32
    iterations (five training seeds; 21–22 for this seed) where CG needs 41–46, with no fallback.
    The assertions keep margin: loss below 0.3, strictly fewer iterations than CG on a held-out
    Ritz vector and on a divergence right-hand side (a different distribution than training)."""
    torch.manual_seed(0)
    s = assemble(empty_box(16, 2))
    A32, A = s.matrix_torch(torch.float32), s.matrix_torch()
    train, val = (torch.from_numpy(v) for v in train_val_vectors(s, n_train=1000, n_val=50, m=100, seed=0))
    net = DCDMNet(2, channels=8)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        initial = dcdm_loss(apply_to_unknowns(net, s, val), val, A32).item()
    for _ in range(300):
        batch = train[torch.randint(0, len(train), (32,), generator=g)]
        loss = dcdm_loss(apply_to_unknowns(net, s, batch), batch, A32)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        final = dcdm_loss(apply_to_unknowns(net, s, val), val, A32).item()
    assert initial > 0.8 and final < 0.3
    direction = network_direction(net, s)
    for b in (val[0].double(), torch.from_numpy(divergence_rhs(s, rng=1)), torch.from_numpy(random_rhs(s, rng=2))):
        res = dcdm_solve(A, b, direction, tol=1e-4, project=s)
        ref = cg(A, b, tol=1e-4, project=s)
        assert res.converged and ref.converged
        assert res.iterations < ref.iterations, (res.iterations, ref.iterations)
