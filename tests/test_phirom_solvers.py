"""Tests of the differentiable solvers behind Φ-ROM: viscous Burgers (ETDRK4) against its Cole–Hopf
solution, explicit 2-D diffusion against its discrete and continuous eigenmodes, and the solver
time derivative ``(S_dt(u) − u)/dt`` with its gradients (CPU, float64)."""
import math

import pytest
import torch
from scipy.special import ive

from neuropde.pde.burgers import Burgers1D, burgers_initial_condition, cole_hopf_solution
from neuropde.pde.diffusion import Diffusion2D, gaussian_initial_condition
from neuropde.pde.navier_stokes import NavierStokes2D, fno_forcing, gaussian_random_field
from neuropde.pde.stepping import solver_time_derivative
from tests.helpers import fitted_order, rel, seeded

pytestmark = pytest.mark.usefixtures("one_thread")

TWO_PI = 2 * math.pi


def spectral_dx(u, L):
    k = (TWO_PI / L) * torch.arange(u.shape[-1] // 2 + 1, dtype=torch.float64)
    return torch.fft.irfft(torch.fft.rfft(u) * 1j * k, n=u.shape[-1])


# --- Burgers -----------------------------------------------------------------------------------
def test_burgers_right_hand_side_matches_analytic_expression():
    # u = sin x: −u u_x + ν u_xx = −½ sin 2x − ν sin x
    solver = Burgers1D(n=32, nu=0.03)
    x = solver.grid()
    assert rel(solver(torch.sin(x)[None]), (-0.5 * torch.sin(2 * x) - 0.03 * torch.sin(x))[None]) < 1e-13
    assert not solver.coefficients(0.1)[0].is_complex()  # real symbol: real ETDRK4 coefficients


def bessel_series(x, t, nu, A=1.0, modes=200):
    """Cole–Hopf for u₀ = A sin x by the Fourier series of φ: φ₀ ∝ e^{a cos x}, a = A/2ν, has the
    coefficients I_m(a) (scaled here by e^{−a}), each decaying as e^{−ν m² t}. Accurate only while
    φ's range e^{−2a} is far above round-off."""
    m = torch.arange(1, modes, dtype=torch.float64)
    a = A / (2 * nu)
    c = torch.from_numpy(ive(m.numpy(), a)) * torch.exp(-nu * m ** 2 * t)
    num = 4 * nu * (m * c * torch.sin(x[:, None] * m)).sum(-1)
    return num / (float(ive(0, a)) + 2 * (c * torch.cos(x[:, None] * m)).sum(-1))


@pytest.mark.parametrize("nu", [0.1, 0.2])
def test_cole_hopf_matches_fourier_series_of_phi(nu):
    # an independent route to the same exact solution, where both are accurate
    x = torch.arange(64, dtype=torch.float64) * (TWO_PI / 64)
    u = cole_hopf_solution(torch.sin, nu, TWO_PI, 64, [0.0, 0.5, 2.0])
    assert u.shape == (3, 64)
    torch.testing.assert_close(u[0], torch.sin(x), rtol=0, atol=1e-15)
    for frame, t in zip(u[1:], (0.5, 2.0)):
        assert (frame - bessel_series(x, t, nu)).abs().max() < 1e-11


def test_cole_hopf_quadrature_is_converged_where_the_fourier_series_fails():
    # at ν = 0.01 φ spans e^{−100}: the series above overflows or is O(1) wrong, the kernel sum is
    # unchanged by 8× more quadrature nodes
    x = torch.arange(256, dtype=torch.float64) * (TWO_PI / 256)
    u0 = lambda x: torch.sin(x) + 0.7 * torch.cos(3 * x + 1)  # noqa: E731
    u = cole_hopf_solution(u0, 0.01, TWO_PI, 256, [0.3, 2.0])
    fine = cole_hopf_solution(u0, 0.01, TWO_PI, 256, [0.3, 2.0], n_quad=8 * 2048)
    assert (u - fine).abs().max() < 1e-12 and u.abs().max() < 2
    series = bessel_series(x, 2.0, 0.01)
    exact = cole_hopf_solution(torch.sin, 0.01, TWO_PI, 256, 2.0)
    assert not torch.isfinite(series).all() or (series - exact).abs().max() > 0.1


def test_burgers_matches_cole_hopf_after_a_steep_front_forms():
    # u₀ = sin x breaks at t = 1; by t = 2 a front of slope ~21 (21× the initial one) sits at x = π,
    # about 2ν/U = 0.045 wide, i.e. 7 grid spacings on 1024 points
    nu, n, dt = 0.02, 1024, 1 / 200
    solver = Burgers1D(n=n, nu=nu)
    x = solver.grid()
    u = solver.simulate(torch.sin(x), dt, [1.0, 2.0])[0]
    exact = cole_hopf_solution(torch.sin, nu, TWO_PI, n, [1.0, 2.0])
    slope = spectral_dx(exact[1], TWO_PI).abs().max().item()
    errs = [rel(u[i], exact[i]) for i in range(2)]
    print(f"Burgers vs Cole–Hopf: rel L2 {errs[0]:.2e} (t=1), {errs[1]:.2e} (t=2); max|u_x| = {slope:.1f}")
    assert slope > 20
    assert max(errs) < 1e-7
    # the same run on 256 points cannot resolve the front (a check that the bar above is strict)
    coarse = Burgers1D(n=256, nu=nu)
    assert rel(coarse.simulate(torch.sin(coarse.grid()), dt, [2.0])[0, 0], exact[1, ::4]) > 1e-4


def test_burgers_temporal_order_is_four():
    # a front forms in both samples (sin x, and a random IC) before T = 2
    n, nu, T = 256, 0.02, 2.0
    solver = Burgers1D(n=n, nu=nu)
    u0 = torch.cat([torch.sin(solver.grid())[None],
                    burgers_initial_condition(1, n, generator=seeded(0))])
    ref = solver.simulate(u0, T / 1600, [T])
    dts = [T / 50, T / 100, T / 200]
    errs = [rel(solver.simulate(u0, dt, [T]), ref) for dt in dts]
    order = fitted_order(dts, errs)
    print(f"Burgers ETDRK4 errors {errs}, fitted order {order:.3f}")
    assert min(errs) > 1e-11  # above round-off and the reference's own error
    assert 3.6 <= order <= 4.4


def test_burgers_initial_condition():
    u = burgers_initial_condition(6, 64, generator=seeded(1), k_max=4, amplitude=1.5)
    assert u.shape == (6, 64) and u.dtype == torch.float64
    assert u.mean(-1).abs().max() < 1e-14  # zero mean: the Cole–Hopf φ₀ is periodic
    rms = u.pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.full((6,), 1.5 / math.sqrt(2), dtype=torch.float64))
    spec = torch.fft.rfft(u).abs()
    assert spec[:, 5:].max() < 1e-12 * spec.max()  # wavenumbers 1..k_max only
    torch.testing.assert_close(burgers_initial_condition(6, 64, generator=seeded(1), k_max=4,
                                                         amplitude=1.5), u)
    fine = burgers_initial_condition(6, 128, generator=seeded(1), k_max=4, amplitude=1.5)
    torch.testing.assert_close(fine[:, ::2], u)  # the same field at every resolution


# --- diffusion ---------------------------------------------------------------------------------
def sine_mode(n, p, q):
    """Discrete Dirichlet eigenmode (n, n), zero on the boundary ring i, j ∈ {0, n − 1}."""
    i = torch.arange(n, dtype=torch.float64)
    s = lambda m: torch.sin(math.pi * m * i / (n - 1))  # noqa: E731
    return s(p)[:, None] * s(q)[None, :]


def test_diffusion_eigenmodes_decay_by_their_discrete_factor():
    # the reference set-up: 42² cells, D = 2, dx = 1, dt = 0.1, 200 steps
    solver, dt = Diffusion2D(), 0.1
    modes = [(1, 1), (3, 7), (40, 40)]  # (40, 40): the checkerboard, factor −0.6 (sign flips)
    u = torch.stack([sine_mode(42, p, q) for p, q in modes])
    r = solver.D * dt / solver.dx ** 2
    factor = torch.tensor([1 - 4 * r * (math.sin(math.pi * p / 82) ** 2 + math.sin(math.pi * q / 82) ** 2)
                           for p, q in modes], dtype=torch.float64)[:, None, None]
    assert factor[-1].item() < -0.5
    torch.testing.assert_close(solver.step(u, dt), factor * u, rtol=0, atol=1e-14)
    traj = solver.simulate(u, dt, 200, record_every=50)
    assert traj.shape == (3, 5, 42, 42)
    torch.testing.assert_close(traj[:, -1], factor ** 200 * u, rtol=0, atol=1e-13)


def test_diffusion_converges_to_continuous_decay_at_second_order():
    # unit square with Dirichlet data on the boundary cells: dx = 1/(n − 1); mode (1, 2) decays
    # as e^{−5π²Dt}. The discrete rate (5-point Laplacian) and the simulated decay to t ≈ 1/rate
    # (dt = dx²/8D, so the Euler error is O(dx²) too) both converge at second order
    D, rate = 1.0, 5 * math.pi ** 2
    ns = [11, 21, 41, 81]
    rate_errs, decay_errs = [], []
    for n in ns:
        dx = 1 / (n - 1)
        solver, mode = Diffusion2D(n, D=D, dx=dx), sine_mode(n, 1, 2)
        rate_h = -(solver.time_derivative(mode) * mode).sum() / (mode * mode).sum()
        rate_errs.append(abs(rate_h.item() - rate * D) / (rate * D))
        dt = dx ** 2 / (8 * D)
        m = round(1 / (rate * D * dt))
        u = solver.simulate(mode, dt, m, record_every=m)[0, -1]
        decay_errs.append(rel(u, math.exp(-rate * D * m * dt) * mode))
    dxs = [1 / (n - 1) for n in ns]
    orders = fitted_order(dxs, rate_errs), fitted_order(dxs[1:], decay_errs[1:])
    print(f"diffusion rate errors {rate_errs}, decay errors {decay_errs}, orders {orders}")
    assert all(1.9 <= o <= 2.1 for o in orders)
    assert decay_errs[-1] < 1e-4


def test_diffusion_stability_limit_is_enforced_and_sharp():
    solver = Diffusion2D()  # dx²/(4D) = 0.125
    u = gaussian_initial_condition(2, generator=seeded(0))
    with pytest.raises(ValueError, match=r"dt <= 0\.125"):
        solver.step(u, 0.13)
    with pytest.raises(ValueError, match=r"dx²/\(4D\) = 0\.125"):
        solver.simulate(u, 0.2, 10)
    with pytest.raises(ValueError, match="stability"):
        solver.step(u, -0.1)
    # the limit is the true one: the highest mode's factor 1 + dt λ_max crosses −1 just above it
    top = sine_mode(42, 40, 40)
    lam = ((solver.time_derivative(top) * top).sum() / (top * top).sum()).item()
    assert abs(1 + solver.stable_dt * lam) <= 1 < abs(1 + 1.02 * solver.stable_dt * lam)
    assert solver.simulate(u, 0.125, 100).abs().max() <= u.abs().max()


def test_diffusion_reference_data_obey_the_maximum_principle():
    u0 = gaussian_initial_condition(8, generator=seeded(3))
    assert u0.shape == (8, 42, 42)
    torch.testing.assert_close(u0, gaussian_initial_condition(8, generator=seeded(3)))
    peak = u0.amax((-2, -1))
    # a ∈ [0.5, 2]; the nearest cell centre is (½, ½) from the integer centre, and σ ≥ 3
    assert (peak <= 2).all() and (peak >= 0.5 * math.exp(-0.5 / (2 * 9))).all()
    ring = torch.ones(42, 42, dtype=torch.bool)
    ring[1:-1, 1:-1] = False
    assert (u0[:, ring] == 0).all()
    # the peak sits next to an integer centre in [−12, 12]²: cells −12.5 .. 12.5
    x = Diffusion2D().grid()
    flat = u0.flatten(-2).argmax(-1)
    assert x[flat // 42].abs().max() <= 12.5 and x[flat % 42].abs().max() <= 12.5
    traj = Diffusion2D().simulate(u0, 0.1, 200, record_every=10)
    assert traj.shape == (8, 21, 42, 42)
    # FTCS with D dt/dx² = 0.2 ≤ 1/4 averages neighbours with positive weights: no new extrema
    assert traj.min() >= 0
    assert (traj.amax((-2, -1)).diff(dim=1) <= 1e-15).all()
    assert (traj[:, -1].sum((-2, -1)) < 0.9 * traj[:, 0].sum((-2, -1))).all()  # mass leaves


# --- solver time derivative and its gradients --------------------------------------------------
def ns_solver(n):
    return NavierStokes2D(n, nu=1e-3, forcing=fno_forcing(n))


def test_solver_time_derivative_tends_to_the_right_hand_side_at_first_order():
    # r(dt) = f + ½ dt f'(u) f + O(dt²): |r − f| is first order, and subtracting the ½ dt J f term
    # (a Jacobian-vector product of the semi-discrete f) leaves a second-order remainder
    cases = [(Burgers1D(n=64, nu=0.05), burgers_initial_condition(2, 64, generator=seeded(4))),
             (ns_solver(16), 3 * gaussian_random_field(2, 16, generator=seeded(5)))]
    dts = [4e-3, 2e-3, 1e-3]
    for solver, u in cases:
        f = solver.time_derivative(u)
        _, jf = torch.func.jvp(solver.time_derivative, (u,), (f,))
        first, second = [], []
        for dt in dts:
            r = solver_time_derivative(solver, u, dt)
            first.append(rel(r, f))
            second.append(rel(r - 0.5 * dt * jf, f))
        orders = fitted_order(dts, first), fitted_order(dts, second)
        print(f"{type(solver).__name__}: |r − f|/|f| {first}, orders {orders}")
        assert 0.95 <= orders[0] <= 1.05 and 1.9 <= orders[1] <= 2.1
        assert first[-1] < 1e-2


def test_diffusion_time_derivative_is_the_discrete_laplacian():
    # forward Euler: (S(u) − u)/dt is D Δ_h u for every dt inside, and −u/dt on the boundary ring
    solver = Diffusion2D()
    u = gaussian_initial_condition(3, generator=seeded(6))
    u = u + 0.1 * torch.rand(u.shape, generator=seeded(7), dtype=torch.float64)  # ring ≠ 0
    inner = (slice(None), slice(1, -1), slice(1, -1))
    for dt in (0.1, 0.01):
        r = solver_time_derivative(solver, u, dt)
        torch.testing.assert_close(r[inner], solver.time_derivative(u)[inner], rtol=0, atol=1e-13)
        ring = solver.apply_boundary(u) != u
        torch.testing.assert_close(r[ring], -u[ring] / dt, rtol=1e-13, atol=0)
    r = solver_time_derivative(solver, u, 0.1, n_steps=2)
    torch.testing.assert_close(r, (solver.step(solver.step(u, 0.1), 0.1) - u) / 0.2)


@pytest.mark.parametrize("model", ["burgers", "diffusion", "navier_stokes"])
def test_gradients_through_one_solver_step_match_finite_differences(model):
    g = seeded(8)
    if model == "burgers":
        solver, dt = Burgers1D(n=16, nu=0.05), 0.1
        u = burgers_initial_condition(2, 16, generator=g, k_max=3)
    elif model == "diffusion":
        solver, dt = Diffusion2D(6), 0.1
        u = torch.rand(2, 6, 6, generator=g, dtype=torch.float64)
    else:
        solver, dt = ns_solver(8), 0.05
        u = 3 * gaussian_random_field(1, 8, generator=g)
    u.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: solver_time_derivative(solver, v, dt), (u,))
    # gradients do reach the field (the Φ-ROM decoder sits upstream of u)
    (solver_time_derivative(solver, u, dt) ** 2).sum().backward()
    assert u.grad is not None and u.grad.abs().max() > 0


# --- argument checks ---------------------------------------------------------------------------
def test_clear_errors():
    with pytest.raises(ValueError, match="non-negative viscosity"):
        Burgers1D(nu=-0.1)
    with pytest.raises(ValueError, match="zero mean"):
        cole_hopf_solution(lambda x: 1 + torch.sin(x), 0.1, TWO_PI, 32, 1.0)
    with pytest.raises(ValueError, match=r"u must be \(B, n\) with n=64"):
        solver_time_derivative(Burgers1D(n=64), torch.zeros(2, 32), 0.1)
    with pytest.raises(ValueError, match=r"u must be \(B, n, n\) with n=42"):
        solver_time_derivative(Diffusion2D(), torch.zeros(2, 40, 40), 0.1)
    with pytest.raises(ValueError, match="dt must be a positive"):
        solver_time_derivative(Diffusion2D(), torch.zeros(2, 42, 42), 0.0)
    with pytest.raises(TypeError, match="no step"):
        solver_time_derivative(object(), torch.zeros(2, 8), 0.1)
    with pytest.raises(ValueError, match="divide n_steps"):
        Diffusion2D().simulate(torch.zeros(42, 42), 0.1, 200, record_every=3)


def test_burgers_with_one_viscosity_per_row_matches_separate_solvers():
    """A parametric batch (ν per row) is the stack of scalar-ν runs, and take() selects rows
    without changing a step."""
    nus = torch.tensor([0.03, 0.05, 0.1])
    u0 = burgers_initial_condition(3, 64, generator=seeded(3), k_max=2)
    batched = Burgers1D(64, nu=nus).simulate(u0, 0.01, [0.3, 0.6])
    for b, nu in enumerate(nus.tolist()):
        alone = Burgers1D(64, nu=nu).simulate(u0[b:b + 1], 0.01, [0.3, 0.6])[0]
        assert rel(batched[b], alone) < 1e-13
    solver = Burgers1D(64, nu=nus)
    solver.coefficients(0.01)  # cached, then indexed by take()
    rows = torch.tensor([2, 0, 2])
    picked = solver.take(rows)
    assert torch.equal(picked.nu, nus[rows].double())
    u_hat = solver.to_spectral(u0[rows])
    ref = Burgers1D(64, nu=nus[rows]).step(u_hat, 0.01)  # coefficients computed afresh
    assert rel(picked.step(u_hat, 0.01), ref) < 1e-14
    with pytest.raises(ValueError, match="one viscosity per row"):
        Burgers1D(64, nu=0.05).take(rows)
    with pytest.raises(ValueError, match="non-negative"):
        Burgers1D(64, nu=torch.tensor([0.1, -0.1]))
