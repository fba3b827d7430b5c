"""Tests of the Navier–Stokes residual: finite-difference weights, the trajectory time derivative,
and that the residual separates solver trajectories from non-physical ones (CPU, float64)."""
import math
from functools import lru_cache

import pytest
import torch

from neuropde.pde import gaussian_random_field
from neuropde.pde.residual import (fd_weights, navier_stokes_residual, residual_norm,
                                   solver_for, solver_for_data, time_derivative,
                                   time_derivative_matrix)
from tests.helpers import seeded

pytestmark = pytest.mark.usefixtures("one_thread")

N, FINE_DT, T0, SPAN = 32, 2.5e-3, 1.0, 1.6  # grid, solver step, first frame, window length


@lru_cache(maxsize=1)
def solver_trajectory():
    """(solver, frames every 0.05 on [T0, T0 + SPAN]) — 33 frames, (1, 33, N, N), solved once.

    The solver step is 20× finer than the finest frame spacing, so its own O(h²) error sits far
    below the finite-difference error being measured. The record times are float64: float32
    times would be off by ~1e-7, which the 4th-order derivative at Δ = 0.05 already resolves.
    """
    solver = solver_for(N, L=1.0, nu=1e-3, forcing="fno")
    w0 = gaussian_random_field(1, N, generator=seeded(0))
    times = T0 + 0.05 * torch.arange(33, dtype=torch.float64)
    return solver, solver.simulate(w0, FINE_DT, times)


def relative_residual(traj, delta, solver, accuracy=4):
    """‖R‖ / ‖∂ₜω‖ in L²(0,T;H⁻¹), ∂ₜω measured by the solver's right-hand side."""
    R = navier_stokes_residual(traj, delta, solver, accuracy)
    scale = residual_norm(solver.time_derivative(traj), dt=delta)
    return (residual_norm(R, dt=delta) / scale).item()


# --- finite-difference weights -------------------------------------------------------------------
@pytest.mark.parametrize("offsets, m, expected", [
    ([-1, 0, 1], 1, [-1 / 2, 0, 1 / 2]),
    ([-2, -1, 0, 1, 2], 1, [1 / 12, -2 / 3, 0, 2 / 3, -1 / 12]),
    ([0, 1, 2], 1, [-3 / 2, 2, -1 / 2]),
    ([0, 1, 2, 3, 4], 1, [-25 / 12, 4, -3, 4 / 3, -1 / 4]),
    ([-2, -1, 0], 1, [1 / 2, -2, 3 / 2]),
    ([-1, 0, 1], 2, [1, -2, 1]),
    ([-2, -1, 0, 1, 2], 2, [-1 / 12, 4 / 3, -5 / 2, 4 / 3, -1 / 12]),
    ([0, 1], 0, [1, 0]),
])
def test_fd_weights_known_stencils(offsets, m, expected):
    w = fd_weights(offsets, m)
    assert w.dtype == torch.float64
    torch.testing.assert_close(w, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-13)


@pytest.mark.parametrize("m", [1, 2, 3])
def test_fd_weights_exact_on_polynomials(m):
    # irregular, unsorted stencil not containing 0: the weights must reproduce d^m/dx^m x^k at 0,
    # which is m! for k = m and 0 otherwise, for every degree k below the number of points
    offsets = [0.3, -1.7, 2.2, -0.4, 1.1, 3.0]
    w = fd_weights(offsets, m)
    x = torch.tensor(offsets, dtype=torch.float64)
    for k in range(len(offsets)):
        expected = math.factorial(m) if k == m else 0.0
        assert (w * x ** k).sum().item() == pytest.approx(expected, abs=1e-10)
    # ... and not beyond: degree P is outside the stencil's exactness
    assert abs((w * x ** len(offsets)).sum().item()) > 1e-3


def test_fd_weights_rejects_bad_stencils():
    with pytest.raises(ValueError, match="distinct"):
        fd_weights([0, 1, 1])
    with pytest.raises(ValueError, match="add points"):
        fd_weights([0, 1], 2)


# --- time derivative along a trajectory -----------------------------------------------------------
@pytest.mark.parametrize("accuracy", [1, 2, 3, 4, 6])
def test_time_derivative_exact_on_polynomials(accuracy):
    T, dt = 9, 0.3
    t = dt * torch.arange(T, dtype=torch.float64)
    coef = torch.randn(accuracy + 1, 2, 3, generator=seeded(accuracy), dtype=torch.float64)
    # traj (2, T, 3): every frame, ends included, must be exact up to degree `accuracy`
    traj = sum(coef[k][:, None, :] * t[None, :, None] ** k for k in range(accuracy + 1))
    exact = sum(k * coef[k][:, None, :] * t[None, :, None] ** (k - 1) for k in range(1, accuracy + 1))
    torch.testing.assert_close(time_derivative(traj, dt, accuracy), exact, rtol=0, atol=1e-10)


@pytest.mark.parametrize("accuracy", [2, 4, 6])
def test_time_derivative_converges_at_stated_order(accuracy):
    omega, span = 2 * math.pi, 1.0
    errors = []
    for T in (41, 81, 161):  # dt = 0.025, 0.0125, 0.00625
        dt = span / (T - 1)
        t = dt * torch.arange(T, dtype=torch.float64)
        d = time_derivative(torch.sin(omega * t)[None], dt, accuracy)[0]
        errors.append((d - omega * torch.cos(omega * t)).abs().max().item())  # ends included
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    print(f"\naccuracy {accuracy}: max errors {['%.2e' % e for e in errors]}, "
          f"orders {['%.2f' % o for o in orders]}")
    assert min(orders) >= accuracy - 0.5


def test_time_derivative_shapes_dtype_and_short_input():
    x = torch.randn(2, 6, 3, 4, 5, dtype=torch.float32)
    d = time_derivative(x, 0.1, accuracy=4)
    assert d.shape == x.shape and d.dtype == torch.float32
    # a linear map along axis 1 only: each spatial point is transformed independently
    D = time_derivative_matrix(6, 0.1, 4, dtype=torch.float32)
    torch.testing.assert_close(d[1, :, 2, 1, 3], D @ x[1, :, 2, 1, 3])
    with pytest.raises(ValueError, match=r"at least accuracy \+ 1 = 5 frames, got T = 4"):
        time_derivative(x[:, :4], 0.1, accuracy=4)


# --- residual of Navier–Stokes trajectories -------------------------------------------------------
@pytest.mark.parametrize("accuracy", [2, 4])
def test_solver_trajectory_residual_is_small_and_falls_with_frame_spacing(accuracy):
    solver, traj = solver_trajectory()
    deltas, strides = (0.2, 0.1, 0.05), (4, 2, 1)  # same window [T0, T0 + SPAN] each time
    ratios = [relative_residual(traj[:, ::k], d, solver, accuracy) for d, k in zip(deltas, strides)]
    orders = [math.log2(a / b) for a, b in zip(ratios, ratios[1:])]
    print(f"\naccuracy {accuracy}: ‖R‖/‖∂ₜω‖ (H⁻¹ Bochner) at Δ = {deltas}: "
          f"{['%.3e' % r for r in ratios]}, orders {['%.2f' % o for o in orders]}")
    assert ratios[0] < 2e-2
    assert min(orders) >= accuracy - 0.5  # each halving of Δ divides it by about 2^accuracy


def test_non_physical_trajectories_have_large_residuals():
    solver, traj = solver_trajectory()
    delta, traj = 0.1, traj[:, ::2]  # 17 frames
    T = traj.shape[1]
    ref = residual_norm(navier_stokes_residual(traj, delta, solver), dt=delta).item()
    noise = gaussian_random_field(T, N, generator=seeded(1))[None]  # (1, T, N, N)
    bump = torch.sin(math.pi * torch.linspace(0, 1, T, dtype=torch.float64))[None, :, None, None]
    fakes = {
        "independent GRF frames": noise,
        "frames shuffled in time": traj[:, torch.randperm(T, generator=seeded(2))],
        # smooth in space and time, 1 % of the field: small, yet not a solution of the PDE
        "1% smooth perturbation": traj + 0.01 * bump * noise[:, :1],
    }
    print(f"\nsolver trajectory (Δ = {delta}): ‖R‖_H⁻¹ = {ref:.3e}")
    for name, fake in fakes.items():
        r = residual_norm(navier_stokes_residual(fake, delta, solver), dt=delta).item()
        print(f"{name}: ‖R‖_H⁻¹ = {r:.3e}, {r / ref:.2e}× the solver trajectory's")
        assert r >= 100 * ref, name


def test_residual_is_differentiable():
    torch.manual_seed(0)
    n, T, delta = 16, 6, 0.1
    solver = solver_for(n, forcing="kolmogorov", L=1.0, kolmogorov_k=2)
    traj = gaussian_random_field(T, n, generator=seeded(3))[None].requires_grad_(True)

    def loss(x):
        return residual_norm(navier_stokes_residual(x, delta, solver), dt=delta).sum()

    loss(traj).backward()
    g = traj.grad
    assert torch.isfinite(g).all() and g.abs().max() > 0
    v = torch.randn(traj.shape, generator=seeded(4), dtype=torch.float64)
    eps = 1e-6
    with torch.no_grad():
        fd = (loss(traj + eps * v) - loss(traj - eps * v)) / (2 * eps)
    assert (g * v).sum().item() == pytest.approx(fd.item(), rel=1e-6)


# --- construction --------------------------------------------------------------------------------
def test_solver_for_data_matches_config_and_shape_is_checked():
    cfg = {"resolution": 16, "generator": {"L": 2 * math.pi, "nu": 2e-3, "forcing": "kolmogorov",
                                           "kolmogorov_k": 3}}
    s = solver_for_data(cfg)
    assert (s.n, s.L, s.nu) == (16, 2 * math.pi, 2e-3)
    # the forcing is what the config names: constant in x, wavenumber 3 in y
    f = s.time_derivative(torch.zeros(1, 16, 16, dtype=torch.float64))[0]
    y = 2 * math.pi * torch.arange(16, dtype=torch.float64) / 16
    torch.testing.assert_close(f, (-3 * torch.cos(3 * y)).expand(16, 16))
    assert solver_for_data(cfg, n=32).n == 32
    assert solver_for(8, forcing="none").f_hat is None
    with pytest.raises(ValueError, match=r"\(B, T, 16, 16\)"):
        navier_stokes_residual(torch.zeros(1, 5, 8, 8), 0.1, s)
