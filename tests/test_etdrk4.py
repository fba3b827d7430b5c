"""Tests of the 1-D ETDRK4 pseudo-spectral solvers (Kuramoto–Sivashinsky, KdV), their coefficients
and initial conditions (CPU, float64 unless stated)."""
import math

import pytest
import torch

from neuropde.pde.etdrk4 import (
    KortewegDeVries,
    KuramotoSivashinsky,
    etdrk4_coefficients,
    kdv_initial_condition,
    ks_initial_condition,
)
from tests.helpers import fitted_order, rel, seeded

pytestmark = pytest.mark.usefixtures("one_thread")


# --- exact solutions ---------------------------------------------------------------------------
def kdv_soliton(x, t, c, delta, L, x0):
    """Soliton of u_t + u u_x + δ² u_xxx = 0 travelling at speed c, centred at x0 + ct (mod L).

    With ξ = x − ct and u = A sech²(ξ/w), integrating once gives −c u + u²/2 + δ² u'' = 0, and
    (sech²)'' = 4 sech² − 6 sech⁴ matches the sech² terms for w² = 4δ²/c and the sech⁴ terms for
    A = 12δ²/w² = 3c: u = 3c sech²(√c ξ / (2δ)).
    """
    xi = torch.remainder(x - c * t - x0 + L / 2, L) - L / 2  # nearest-image distance to the peak
    return 3 * c / torch.cosh(math.sqrt(c) * xi / (2 * delta)) ** 2


def test_kdv_soliton_keeps_shape_and_speed():
    # width w = 2δ/√c = 1; L = 32 w puts the periodic images at sech²(16) ≈ 5e-14 of the peak, and
    # n = 256 leaves the sech² spectrum (∝ k / sinh(π k w / 2)) at 2e-10 of its peak at the 2/3 cutoff
    c, delta, L, n, dt = 1.0, 0.5, 32.0, 256, 1 / 200
    solver = KortewegDeVries(n=n, L=L, delta=delta)
    x = solver.grid()
    u0 = kdv_soliton(x, 0.0, c, delta, L, x0=L / 2)
    assert kdv_soliton(torch.tensor([0.0]), 0.0, c, delta, L, L / 2).item() / (3 * c) < 1e-10
    spec = torch.fft.rfft(u0).abs()
    assert (spec[n // 3:].max() / spec.max()).item() < 1e-9

    T = L / c  # one crossing: back where it started
    u = solver.simulate(u0, dt, [0.0, T / 2, T])[0]
    torch.testing.assert_close(u[0], u0, rtol=0, atol=1e-14)
    for frame, t in zip(u[1:], (T / 2, T)):
        err = rel(frame, kdv_soliton(x, t, c, delta, L, x0=L / 2))
        print(f"soliton error at t={t}: {err:.2e}")
        assert err <= 1e-6
    # a tenth of a grid spacing of drift would be an error of ~5e-2 (so speed is really tested)
    assert rel(u[2], kdv_soliton(x, T + 0.1 * L / n, c, delta, L, L / 2)) > 1e-3


@pytest.mark.parametrize("model", ["ks", "kdv"])
def test_time_derivative_matches_analytic_expression(model):
    if model == "ks":
        # u = sin x on L = 2π: −u u_x − u_xx − u_xxxx = −½ sin 2x + sin x − sin x
        solver = KuramotoSivashinsky(n=32, L=2 * math.pi)
        x = solver.grid()
        u, expected = torch.sin(x), -0.5 * torch.sin(2 * x)
    else:
        # u = sin κx: −u u_x − δ² u_xxx = −(κ/2) sin 2κx + δ² κ³ cos κx
        solver = KortewegDeVries(n=32, L=2.0, delta=0.1)
        x = solver.grid()
        kappa = math.pi
        u = torch.sin(kappa * x)
        expected = -0.5 * kappa * torch.sin(2 * kappa * x) + 0.01 * kappa ** 3 * torch.cos(kappa * x)
    # round-off of the top modes is amplified by up to k⁴ (KS) or k³ (KdV)
    assert rel(solver.time_derivative(u[None].expand(2, -1)), expected.expand(2, -1)) < 1e-10
    assert rel(solver(u), expected) < 1e-10  # forward, unbatched


def test_nonlinear_term_is_dealiased_by_the_two_thirds_rule():
    # n = 32 keeps |j| ≤ 10. u = cos 5x + cos 9x: u² = 1 + cos 4x + ½ cos 10x + cos 14x + ½ cos 18x,
    # and 18 aliases onto 14 on 32 points; the product is truncated to −½∂x(1 + cos 4x + ½ cos 10x)
    solver = KuramotoSivashinsky(n=32, L=2 * math.pi)
    x = solver.grid()
    u = torch.cos(5 * x) + torch.cos(9 * x)
    n_u = solver.to_physical(solver.nonlinear_hat(solver.to_spectral(u)))
    assert rel(n_u, 2 * torch.sin(4 * x) + 2.5 * torch.sin(10 * x)) < 1e-13
    # modes above n/3 do not feed the nonlinearity (unmasked, 11 + 11 = 22 would alias onto 10)
    high = solver.to_spectral(torch.cos(11 * x) + torch.cos(12 * x))
    assert solver.nonlinear_hat(high).abs().max() < 1e-12


# --- Kuramoto–Sivashinsky dynamics -------------------------------------------------------------
def test_ks_conserves_mean():
    solver = KuramotoSivashinsky()
    u0 = ks_initial_condition(2, 64, 22.0, amplitude=1.0, generator=seeded(0))
    u0 = u0 + torch.tensor([[0.0], [0.7]])  # a zero-mean and a nonzero-mean state
    u = solver.simulate(u0, 0.25, [5.0, 20.0])
    assert u.std(-1).min() > 0.3  # the field did evolve
    assert (u.mean(-1) - u0.mean(-1, keepdim=True)).abs().max() < 1e-13


def test_ks_chaotic_run_stays_bounded_and_active():
    solver = KuramotoSivashinsky(n=64, L=22.0)
    u0 = ks_initial_condition(4, 64, 22.0, generator=seeded(0))  # RMS 0.1
    times = torch.arange(0.0, 101.0, 5.0)
    u = solver.simulate(u0, 0.25, times)
    late = u[:, times >= 30]  # past the growth from the small initial state
    std = late.std(-1)
    print(f"std of u for t >= 30: min {std.min():.2f}, max {std.max():.2f}")
    assert torch.isfinite(u).all() and u.abs().max() < 10
    assert std.min() > 0.5 and std.max() < 3  # O(1), neither decaying nor blowing up
    change = (late[:, 1:] - late[:, :-1]).norm(dim=-1) / late[:, :-1].norm(dim=-1)
    assert change.amax(-1).min() > 0.2  # still moving, not settled on an equilibrium


# --- accuracy of the time stepping -------------------------------------------------------------
@pytest.mark.parametrize("model", ["ks", "kdv"])
def test_temporal_order_is_four(model):
    if model == "ks":
        solver, T = KuramotoSivashinsky(), 2.0
        u0 = ks_initial_condition(2, 64, 22.0, amplitude=1.0, generator=seeded(1))
        dts, dt_ref = [1 / 16, 1 / 32, 1 / 64], 1 / 512
    else:
        solver, T = KortewegDeVries(), 0.2
        u0 = kdv_initial_condition(2, 128, 2.0, generator=seeded(1))
        dts, dt_ref = [T / 40, T / 80, T / 160], T / 1280
    ref = solver.simulate(u0, dt_ref, [T])
    errs = [rel(solver.simulate(u0, dt, [T]), ref) for dt in dts]
    order = fitted_order(dts, errs)
    print(f"{model} ETDRK4 errors {errs}, fitted order {order:.3f}")
    assert min(errs) > 1e-11  # above round-off, so the slope means something
    assert 3.6 <= order <= 4.4


def test_float32_matches_float64_and_batch_matches_single_runs():
    u0 = ks_initial_condition(3, 64, 22.0, amplitude=1.0, generator=seeded(2))
    s64, s32 = KuramotoSivashinsky(), KuramotoSivashinsky(dtype=torch.float32)
    u64 = s64.simulate(u0, 0.25, [10.0])
    u32 = s32.simulate(u0, 0.25, [10.0])
    assert u32.dtype == torch.float32 and u64.dtype == torch.float64
    assert rel(u32.double(), u64) < 1e-4
    singles = torch.cat([s64.simulate(u0[i], 0.25, [10.0]) for i in range(3)])
    assert singles.shape == (3, 1, 64)
    torch.testing.assert_close(u64, singles, rtol=1e-12, atol=1e-12)


# --- coefficients ------------------------------------------------------------------------------
def _phi(k, z, terms=40):
    """φ_k(z) = Σ_m z^m / (m + k)! by its Taylor series (accurate for |z| ≤ 1)."""
    out = torch.zeros_like(z)
    for m in reversed(range(terms)):
        out = out + z ** m / float(math.factorial(m + k))
    return out


def _taylor_coefficients(z, h):
    """The same coefficients from φ-functions: Q = (h/2) φ1(z/2), f1 = h(φ1 − 3φ2 + 4φ3),
    f2 = h(φ2 − 2φ3), f3 = h(4φ3 − φ2) (each → h/6 as z → 0, giving RK4)."""
    p1, p2, p3 = _phi(1, z), _phi(2, z), _phi(3, z)
    return (torch.exp(z), torch.exp(z / 2), h / 2 * _phi(1, z / 2), h * (p1 - 3 * p2 + 4 * p3),
            h * (p2 - 2 * p3), h * (4 * p3 - p2))


def _direct_coefficients(z, h):
    return (torch.exp(z), torch.exp(z / 2), h * (torch.exp(z / 2) - 1) / z,
            h * (-4 - z + torch.exp(z) * (4 - 3 * z + z ** 2)) / z ** 3,
            h * (2 + z + torch.exp(z) * (z - 2)) / z ** 3,
            h * (-4 - 3 * z - z ** 2 + torch.exp(z) * (4 - z)) / z ** 3)


def test_coefficients_at_zero_are_the_rk4_limits():
    h = 0.3
    E, E2, Q, f1, f2, f3 = etdrk4_coefficients(torch.zeros(3, dtype=torch.complex128), h)
    assert not E.is_complex()  # a real symbol gives real coefficients
    for c, limit in ((E, 1.0), (E2, 1.0), (Q, h / 2), (f1, h / 6), (f2, h / 6), (f3, h / 6)):
        torch.testing.assert_close(c, torch.full((3,), limit, dtype=torch.float64), rtol=1e-14, atol=0)


@pytest.mark.parametrize("kind", ["real", "imaginary", "complex"])
def test_coefficients_match_taylor_series_for_small_z(kind):
    # the direct formulas cancel catastrophically here (relative errors 1e-5 to 1 at |z| = 1e-5)
    h = 0.5
    mags = torch.tensor([1e-5, 1e-3, 0.05, 0.4], dtype=torch.float64)
    unit = {"real": -1.0, "imaginary": 1j, "complex": complex(-0.6, 0.8)}[kind]
    z = mags.to(torch.complex128) * unit
    got = etdrk4_coefficients(z / h, h)
    assert got[0].is_complex() == (kind != "real")
    for g, want in zip(got, _taylor_coefficients(z, h)):
        want = want.real if kind == "real" else want
        assert ((g - want).abs() / want.abs()).max() < 1e-13
    direct_err = max((abs(d[0] - t[0]) / abs(t[0])).item()
                     for d, t in zip(_direct_coefficients(z, h)[3:], _taylor_coefficients(z, h)[3:]))
    assert direct_err > 1e-6  # so the bar above does test the contour evaluation


def test_coefficients_match_direct_formulas_for_large_z():
    h = 0.25
    z = torch.tensor([-2.0, -8.0, -60.0, -1500.0, 3.0, 6j, -40j, complex(-2, 30), complex(1.5, -4)],
                     dtype=torch.complex128)
    got = etdrk4_coefficients(z / h, h)
    for g, want in zip(got, _direct_coefficients(z, h)):
        torch.testing.assert_close(g, want, rtol=1e-12, atol=1e-300)  # E, E2 underflow to 0 alike


def test_solver_caches_coefficients_in_its_dtype():
    ks, kdv = KuramotoSivashinsky(dtype=torch.float32), KortewegDeVries()
    coef = ks.coefficients(0.25)
    assert coef is ks.coefficients(0.25)  # cached per dt
    assert all(c.dtype == torch.float32 and c.shape == (33,) for c in coef)  # KS symbol is real
    assert all(c.dtype == torch.complex128 and c.shape == (65,) for c in kdv.coefficients(1e-3))
    assert kdv.symbol()[-1] == 0  # the Nyquist mode of the odd (third) derivative is dropped


# --- initial conditions ------------------------------------------------------------------------
def test_ks_initial_condition():
    u = ks_initial_condition(5, 64, 22.0, k_max=8, amplitude=0.3, generator=seeded(3))
    assert u.shape == (5, 64) and u.dtype == torch.float64
    assert u.mean(-1).abs().max() < 1e-14
    torch.testing.assert_close(u.pow(2).mean(-1).sqrt(), torch.full((5,), 0.3, dtype=torch.float64))
    spec = torch.fft.rfft(u).abs()
    assert spec[:, 9:].max() < 1e-12 * spec.max()  # only |k| ≤ k_max
    fine = ks_initial_condition(5, 128, 22.0, k_max=8, amplitude=0.3, generator=seeded(3))
    torch.testing.assert_close(fine[:, ::2], u)  # same field at every resolution
    assert not torch.allclose(ks_initial_condition(5, 64, 22.0, generator=seeded(4)), u)
    with pytest.raises(ValueError, match="lower k_max or raise n"):
        ks_initial_condition(1, 16, 22.0, k_max=8)


def test_kdv_initial_condition():
    u = kdv_initial_condition(200, 128, 2.0, generator=seeded(5), dtype=torch.float32)
    assert u.shape == (200, 128) and u.dtype == torch.float32
    torch.testing.assert_close(u, kdv_initial_condition(200, 128, 2.0, generator=seeded(5),
                                                        dtype=torch.float32))
    assert u.double().mean(-1).abs().max() < 1e-6
    assert u.abs().max() <= 1.0 and u.abs().amax(-1).min() > 0.0
    spec = torch.fft.rfft(u.double()).abs()
    assert spec[:, 4:].max() < 1e-5 * spec.max()  # integer wavenumbers 1..3 only
    assert (spec[:, 1:4] > 1e-3 * spec.max()).any(0).all()  # and each of them occurs


# --- argument checks ---------------------------------------------------------------------------
def test_clear_errors():
    solver = KuramotoSivashinsky()
    u0 = ks_initial_condition(2, 64, 22.0, generator=seeded(0))
    with pytest.raises(ValueError, match="not a multiple of dt.*choose a dt that divides"):
        solver.simulate(u0, 0.1, [0.35])
    with pytest.raises(ValueError, match="dt must be a positive"):
        solver.simulate(u0, -0.1, [1.0])
    with pytest.raises(ValueError, match="dt must be a positive"):
        solver.step(solver.to_spectral(u0), 0.0)
    with pytest.raises(ValueError, match=r"u0 must be \(B, 64\) or \(64,\).*resample"):
        solver.simulate(u0[:, :32], 0.25, [1.0])
    with pytest.raises(ValueError, match=r"u0 must be \(B, 64\)"):
        solver.simulate(u0[None], 0.25, [1.0])
    with pytest.raises(ValueError, match="non-decreasing.*sort"):
        solver.simulate(u0, 0.25, [1.0, 0.5])
    # 0.3 / 0.1 = 2.9999999999999996 is within the tolerance: three steps
    assert solver.simulate(u0, 0.1, [0.0, 0.3]).shape == (2, 2, 64)
