"""Tests of the pseudo-spectral Navier–Stokes solver, its forcings and initial conditions, and
the spectral helpers (CPU, float64 unless stated)."""
import math

import pytest
import torch

from neuropde.pde import (NavierStokes2D, dealias_mask, fno_forcing, fourier_resample,
                          gaussian_random_field, inverse_laplacian, kolmogorov_forcing,
                          mcwilliams_vorticity, spectral_grad, spectral_laplacian)
from tests.helpers import rel, seeded

TWO_PI = 2 * math.pi


pytestmark = pytest.mark.usefixtures("one_thread")


def grid(n, L=1.0):
    x = torch.arange(n, dtype=torch.float64) * (L / n)
    return x[:, None], x[None, :]


def fno_solver(n, nu=1e-3, **kw):
    return NavierStokes2D(n, nu=nu, forcing=fno_forcing(n), **kw)


# --- exact solutions ---------------------------------------------------------------------------
@pytest.mark.parametrize("L, m, nu, T", [(1.0, 1, 0.01, 1.0), (TWO_PI, 2, 0.05, 2.5)])
def test_taylor_green_matches_exact_solution(L, m, nu, T):
    # ψ = A sin(κx) sin(κy) is a steady Euler flow (ω = 2κ²ψ, so u·∇ω = 0) that decays as e^{−2νκ²t}
    n, kappa, A = 32, TWO_PI * m / L, 1.0 / (TWO_PI * m / L)  # A makes max|u| = 1
    x, y = grid(n, L)
    psi0 = A * torch.sin(kappa * x) * torch.sin(kappa * y)
    w0 = 2 * kappa ** 2 * psi0
    solver = NavierStokes2D(n, L=L, nu=nu)
    w = solver.simulate(w0[None], 0.01, [T])[0, 0]
    decay = math.exp(-2 * nu * kappa ** 2 * T)
    assert decay < 0.7  # a meaningful amount of decay
    assert rel(w, w0 * decay) <= 1e-6
    u, v = solver.velocity(w0)
    assert rel(u, A * kappa * torch.sin(kappa * x) * torch.cos(kappa * y)) < 1e-12
    assert rel(v, -A * kappa * torch.cos(kappa * x) * torch.sin(kappa * y)) < 1e-12


def test_advection_matches_analytic_expression():
    # ψ = sin(ax) + cos(by): u = −b sin(by), v = −a cos(ax), u·∇ω = ab(b² − a²) cos(ax) sin(by)
    n, a, b = 32, TWO_PI, 2 * TWO_PI
    x, y = grid(n)
    w = a ** 2 * torch.sin(a * x) + b ** 2 * torch.cos(b * y)
    solver = NavierStokes2D(n)
    u, v = solver.velocity(w)
    assert rel(u, -b * torch.sin(b * y).expand(n, n)) < 1e-12
    assert rel(v, -a * torch.cos(a * x).expand(n, n)) < 1e-12
    expected = a * b * (b ** 2 - a ** 2) * torch.cos(a * x) * torch.sin(b * y)
    assert rel(solver.advection(w), expected) < 1e-12


# --- time stepping -----------------------------------------------------------------------------
def test_temporal_order_is_at_least_two():
    n, T = 32, 1.0
    solver = fno_solver(n)
    w0 = 3 * gaussian_random_field(2, n, generator=seeded(0))  # stronger advection than the default
    ref = solver.simulate(w0, T / 640, [T])
    dts = [0.1, 0.05, 0.025]
    errs = [rel(solver.simulate(w0, dt, [T]), ref) for dt in dts]
    order = math.log(errs[0] / errs[-1]) / math.log(dts[0] / dts[-1])
    print(f"RK3/CN errors {errs}, measured order {order:.3f}")
    assert order >= 1.8


@pytest.mark.parametrize("forced", [True, False])
def test_spatial_mean_is_conserved(forced):
    n = 32
    solver = fno_solver(n) if forced else NavierStokes2D(n)
    w0 = gaussian_random_field(2, n, generator=seeded(1)) + 0.3
    w = solver.simulate(w0, 0.05, [2.0, 10.0])
    assert (w.mean(dim=(-2, -1)) - 0.3).abs().max() < 1e-13


def test_energy_and_enstrophy_decay_without_forcing():
    n, nu = 64, 1e-3
    solver = NavierStokes2D(n, L=TWO_PI, nu=nu)
    w0 = mcwilliams_vorticity(2, n, generator=seeded(2))
    times = torch.linspace(0, 1, 21)
    w = solver.simulate(w0, 0.0025, times)
    E, Z = solver.kinetic_energy(w), solver.enstrophy(w)  # (B, T)
    assert (E.diff(dim=1) < 0).all() and (Z.diff(dim=1) < 0).all()
    # dealiased advection conserves energy, so dE/dt = −ν⟨ω²⟩ = −2νZ (Simpson's rule in time);
    # what is left is RK3's own dissipation (7e-5 here), without dealiasing it is O(1)
    h = (times[1] - times[0]).item()
    integral = h / 3 * (Z[:, 0] + Z[:, -1] + 4 * Z[:, 1:-1:2].sum(1) + 2 * Z[:, 2:-1:2].sum(1))
    assert torch.allclose(E[:, -1] - E[:, 0], -2 * nu * integral, rtol=3e-4)


def test_batched_solve_equals_per_sample_solves():
    n = 32
    solver = fno_solver(n)
    w0 = gaussian_random_field(3, n, generator=seeded(3))
    batched = solver.simulate(w0, 0.05, [0.5, 1.0])
    single = torch.cat([solver.simulate(w0[i:i + 1], 0.05, [0.5, 1.0]) for i in range(3)])
    assert batched.shape == (3, 2, n, n)
    assert torch.allclose(batched, single, rtol=0, atol=1e-13)


def test_float32_stays_close_to_float64():
    n = 32
    w0 = gaussian_random_field(2, n, generator=seeded(4))
    w64 = fno_solver(n).simulate(w0, 0.05, [1.0])
    w32 = fno_solver(n, dtype=torch.float32).simulate(w0.float(), 0.05, [1.0])
    assert w32.dtype == torch.float32
    assert rel(w32.double(), w64) < 1e-5


def test_simulate_hits_record_times_exactly():
    n = 16
    solver = fno_solver(n)
    w0 = gaussian_random_field(1, n, generator=seeded(5))
    out = solver.simulate(w0, 0.1, [0.0, 0.25, 0.3])
    # 0 -> 0.25 is 3 steps of 0.25/3 (not 2.5 steps of 0.1), then one step of 0.05
    w_hat = torch.fft.rfft2(w0)
    for _ in range(3):
        w_hat = solver.step(w_hat, 0.25 / 3)
    w25 = torch.fft.irfft2(w_hat, s=(n, n))
    w30 = torch.fft.irfft2(solver.step(w_hat, 0.05), s=(n, n))
    assert torch.allclose(out[:, 0], w0, rtol=0, atol=1e-15)
    assert torch.allclose(out[:, 1], w25, rtol=0, atol=1e-14)
    assert torch.allclose(out[:, 2], w30, rtol=0, atol=1e-14)
    with pytest.raises(ValueError):
        solver.simulate(w0, 0.1, [0.3, 0.2])


def test_time_derivative_matches_a_small_step_and_is_differentiable():
    n, h = 32, 1e-5
    solver = fno_solver(n)
    w0 = 3 * gaussian_random_field(2, n, generator=seeded(6))
    fd = (solver.simulate(w0, h, [h])[:, 0] - w0) / h
    dwdt = solver.time_derivative(w0)
    assert rel(solver.advection(w0), dwdt) > 0.1  # the nonlinear term matters here
    assert rel(dwdt, fd) < 1e-4

    small = NavierStokes2D(8, nu=0.05, forcing=fno_forcing(8))
    w = gaussian_random_field(1, 8, generator=seeded(7)).requires_grad_()
    assert torch.autograd.gradcheck(small.time_derivative, (w,))


# --- fused (no-autograd) path --------------------------------------------------------------------
@pytest.mark.parametrize("n, dealias, forcing", [(32, True, "fno"), (33, True, "fno"), (16, False, None),
                                                 (24, True, "batch")])
def test_fused_step_equals_autograd_step(n, dealias, forcing):
    B = 3
    f = {"fno": fno_forcing(n), None: None,
         "batch": gaussian_random_field(B, n, generator=seeded(20))}[forcing]
    solver = NavierStokes2D(n, nu=1e-3, forcing=f, dealias=dealias)
    solver._chunk = lambda batch: 2  # two chunks, one of them partial
    w_hat = solver.to_spectral(3 * gaussian_random_field(B, n, generator=seeded(21)))
    assert solver._can_fuse(w_hat)
    fused, plain = w_hat, w_hat
    for dt in (0.02, 0.01, 0.02):  # a second dt, then a cached one
        fused, plain = solver.step(fused, dt), solver._step_autograd(plain, dt)
    assert torch.allclose(fused, plain, rtol=0, atol=1e-13 * plain.abs().max())
    # the fused path leaves its input alone and does not reuse its output
    again = solver.step(w_hat, 0.02)
    assert not torch.equal(again, w_hat) and torch.equal(again, solver.step(w_hat, 0.02))


def test_step_stays_differentiable_and_float32_fuses():
    n = 16
    solver = fno_solver(n)
    w = gaussian_random_field(1, n, generator=seeded(22)).requires_grad_()
    out = solver.to_physical(solver.step(solver.to_spectral(w), 0.05))
    (out ** 2).sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
    s32 = fno_solver(n, dtype=torch.float32)
    h32 = s32.to_spectral(w.detach())
    assert rel(s32.step(h32, 0.05), s32._step_autograd(h32, 0.05)) < 1e-6


def test_stepper_advances_in_place_like_step():
    n, dt = 32, 0.02
    solver = fno_solver(n)
    w_hat = solver.to_spectral(gaussian_random_field(2, n, generator=seeded(23)))
    state, advance = solver.stepper(w_hat, dt, steps=3)
    advance()
    advance()
    expected = w_hat
    for _ in range(6):
        expected = solver.step(expected, dt)
    assert torch.allclose(state, expected, rtol=0, atol=1e-14 * expected.abs().max())
    # the state is a view of the stepper's buffer: stepping it (or a stepper of it) copies
    before = state.clone()
    solver.step(state, dt)
    solver.stepper(state, dt)[1]()
    assert torch.equal(state, before)
    with pytest.raises(ValueError, match="CUDA"):
        solver.stepper(w_hat, dt, cuda_graph=True)
    with pytest.raises(ValueError, match="must be"):
        solver.stepper(w_hat.to(torch.complex64), dt)


@pytest.mark.gpu
def test_cuda_graph_stepper_matches_eager_steps():
    n, dt = 64, 0.01
    solver = NavierStokes2D(n, nu=1e-3, forcing=fno_forcing(n), dtype=torch.float32, device="cuda")
    w_hat = solver.to_spectral(gaussian_random_field(4, n, generator=seeded(24)))
    state, advance = solver.stepper(w_hat, dt, steps=5)  # CUDA graph by default on CUDA
    advance()
    advance()
    expected = w_hat
    for _ in range(10):
        expected = solver._step_autograd(expected, dt)
    assert rel(state, expected) < 1e-5


# --- forcings ------------------------------------------------------------------------------------
def test_forcings():
    n, L = 32, TWO_PI
    x, y = grid(n, L)
    phase = TWO_PI * (x + y) / L
    assert torch.allclose(fno_forcing(n, L), 0.1 * (torch.sin(phase) + torch.cos(phase)))
    # Kolmogorov: the vorticity forcing is the curl ∂_x F_y − ∂_y F_x of F = A sin(κy) e_x
    A, k = 2.0, 4
    Fx = A * torch.sin(TWO_PI * k / L * y).expand(n, n)
    curl = -spectral_grad(Fx, L)[1]
    assert torch.allclose(kolmogorov_forcing(n, L, k=k, amplitude=A), curl, atol=1e-12)


# --- initial conditions --------------------------------------------------------------------------
def _coefficients_agree(fine, coarse):
    """The spectra of coarse (n) and fine fields agree on every mode |k| < n/2."""
    n = coarse.shape[-1]
    K = (n - 1) // 2
    cf = torch.fft.rfft2(fine, norm="forward")
    cc = torch.fft.rfft2(coarse, norm="forward")
    rows = list(range(K + 1)) + list(range(-K, 0))
    return torch.allclose(cf[..., rows, : K + 1], cc[..., rows, : K + 1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("make", [
    lambda b, n, g: gaussian_random_field(b, n, generator=g),
    lambda b, n, g: mcwilliams_vorticity(b, n, generator=g),
], ids=["grf", "mcwilliams"])
def test_initial_conditions_are_resolution_independent(make):
    fine = make(2, 256, seeded(8))
    for n in (64, 45):
        coarse = make(2, n, seeded(8))
        assert coarse.shape == (2, n, n) and coarse.dtype == torch.float64
        assert _coefficients_agree(fine, coarse)
        # the coarse field is the fine one resampled, up to the fine field's ±n/2 modes
        assert _coefficients_agree(fourier_resample(fine, n), coarse)
        assert coarse.mean(dim=(-2, -1)).abs().max() < 1e-14
    assert torch.equal(make(2, 64, seeded(8)), make(2, 64, seeded(8)))
    assert not torch.allclose(make(2, 64, seeded(8)), make(2, 64, seeded(9)))
    # a batch draws samples independently
    assert not torch.allclose(fine[0], fine[1])


def test_grf_coefficient_statistics_match_the_fno_normalisation():
    # E|a_k|² = 2σ²(4π²|k|² + τ²)^(−α), σ = τ^(α−1), for modes on the k_y = 0 column too: if the
    # field were not built from a Hermitian spectrum those would lose half their variance
    alpha, tau, n = 2.5, 7.0, 16
    f = gaussian_random_field(4000, n, alpha=alpha, tau=tau, generator=seeded(10), ref_modes=8)
    power = (torch.fft.rfft2(f, norm="forward").abs() ** 2).mean(0)
    for kx, ky in [(1, 0), (-2, 0), (0, 1), (1, 1), (-3, 2)]:
        theory = 2 * tau ** (2 * alpha - 2) * (4 * math.pi ** 2 * (kx ** 2 + ky ** 2) + tau ** 2) ** -alpha
        assert abs(power[kx, ky].item() / theory - 1) < 0.1, (kx, ky)
    assert power[0, 0] < 1e-28


def test_mcwilliams_has_unit_kinetic_energy():
    n = 256  # holds every reference mode, so the energy is exactly one
    w = mcwilliams_vorticity(2, n, generator=seeded(11))
    E = NavierStokes2D(n, L=TWO_PI).kinetic_energy(w)
    assert torch.allclose(E, torch.ones(2, dtype=torch.float64), rtol=1e-10)


# --- spectral helpers ----------------------------------------------------------------------------
# (shape, size): 1-D and 2-D, odd and even, up and down, square (int size) and mixed axes
RESAMPLINGS = [((16,), (24,)), ((16,), (33,)), ((15,), (32,)), ((15,), (20,)), ((17,), (17,)),
               ((16, 16), 24), ((16, 16), 33), ((15, 15), 32), ((15, 15), 20), ((17, 17), 17),
               ((33, 16), (40, 34)), ((16, 15), (16, 48))]


@pytest.mark.parametrize("shape, size", RESAMPLINGS)
def test_fourier_resample_round_trip(shape, size):
    new = (size, size) if isinstance(size, int) else size
    axes = tuple(range(-len(shape), 0))
    f = torch.randn(3, 2, *shape, generator=seeded(12), dtype=torch.float64)
    up = fourier_resample(f, size)
    assert up.shape == (3, 2, *new)
    assert torch.allclose(fourier_resample(up, shape), f, rtol=0, atol=1e-12)
    assert torch.allclose(up.mean(dim=axes), f.mean(dim=axes), atol=1e-12)
    f32 = fourier_resample(f.float(), size)
    assert f32.dtype == torch.float32 and torch.allclose(f32.double(), up, atol=1e-5)


def band_limited(shape, nyquist_sine=True):
    """Σ over axes of low modes + cos(2π·8x) (+ sin(2π·8x)) + 0.5 on a grid ``shape``: (*shape,).

    |k| ≤ 8 on every axis: on a 16-point axis cos(2π·8x) is the Nyquist mode and sin(2π·8x)
    samples to zero, so a resampler that drops or mishandles the Nyquist mode fails here.
    """
    xs = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) / n for n in shape], indexing="ij")
    f = torch.full(shape, 0.5, dtype=torch.float64)
    for i, x in enumerate(xs):
        f = f + torch.sin(TWO_PI * (3 + i) * x) * torch.cos(TWO_PI * 2 * xs[-1 - i]) + torch.cos(TWO_PI * 8 * x)
        if nyquist_sine:
            f = f + 0.7 * torch.sin(TWO_PI * 8 * x)
    return f


@pytest.mark.parametrize("coarse, fine", [((16,), (40,)), ((17,), (40,)), ((16,), (48,)),
                                          ((16, 16), (40, 40)), ((17, 16), (45, 40)), ((16, 17), (48, 34))])
def test_fourier_resample_is_exact_for_band_limited_fields(coarse, fine):
    # going down, the fine ±8 modes fold onto the coarse Nyquist mode as point sampling does,
    # so the result is the coarse grid's point values even when no stride maps one grid onto the other
    assert torch.allclose(fourier_resample(band_limited(fine), coarse), band_limited(coarse), atol=1e-12)
    # going up from the coarse grid's point values, the split Nyquist mode gives back cos(2π·8x)
    # (sin(2π·8x) is invisible on an even 16-point grid, so it is left out)
    up = fourier_resample(band_limited(coarse, nyquist_sine=False), fine)
    assert torch.allclose(up, band_limited(fine, nyquist_sine=False), atol=1e-12)


def test_fourier_resample_square_size_needs_a_square_grid():
    with pytest.raises(ValueError, match="one size per axis"):
        fourier_resample(torch.zeros(2, 16, 15), 8)


def test_spectral_derivatives():
    n, L = 32, TWO_PI
    x, y = grid(n, L)
    f = torch.sin(3 * x) * torch.cos(2 * y)
    fx, fy = spectral_grad(f, L)
    assert torch.allclose(fx, 3 * torch.cos(3 * x) * torch.cos(2 * y), atol=1e-12)
    assert torch.allclose(fy, -2 * torch.sin(3 * x) * torch.sin(2 * y), atol=1e-12)
    assert torch.allclose(spectral_laplacian(f, L), -13 * f, atol=1e-12)
    assert torch.allclose(inverse_laplacian(f + 1.0, L), -f / 13, atol=1e-12)
    mask = dealias_mask(64)
    assert mask.shape == (64, 33) and mask.sum() == (2 * 21 + 1) * 22


def test_a_batch_of_forcings_drives_each_field_to_its_exact_solution():
    """ω₀ = 0 and f = A sin(k x): the flow is a shear flow (no advection), so
    ω(t) = A / (ν|k|²) · (1 − exp(−ν|k|² t)) · sin(k x) exactly; two forcings in one batch."""
    n, L, nu, T = 32, 2 * math.pi, 0.05, 2.0
    x = torch.arange(n, dtype=torch.float64) * L / n
    X, Y = torch.meshgrid(x, x, indexing="ij")
    cases = [(1.5, 2, X), (-0.7, 3, Y)]  # amplitude, wavenumber, direction
    forcing = torch.stack([a * torch.sin(k * d) for a, k, d in cases])
    solver = NavierStokes2D(n, L=L, nu=nu, forcing=forcing)
    w = solver.simulate(torch.zeros(2, n, n, dtype=torch.float64), 1e-2, [T])[:, -1]
    for i, (a, k, d) in enumerate(cases):
        exact = a / (nu * k ** 2) * (1 - math.exp(-nu * k ** 2 * T)) * torch.sin(k * d)
        # second order in time: 5e-8 relative at dt = 1e-2 (5e-6 at 1e-1)
        assert torch.allclose(w[i], exact, rtol=0, atol=1e-6 * exact.abs().max()), i
    with pytest.raises(ValueError, match="forcing must be"):
        NavierStokes2D(n, L=L, forcing=torch.zeros(2, n, n + 1))
