"""Sobolev norms and relative errors: analytic values and invariances."""
import math

import pytest
import torch

from neuropde.losses import make_loss, rel_l2, rel_l2_per_frame, rel_sobolev, sobolev_norm


def mode(n, kx, ky, L=1.0, amp=1.0):
    x = torch.arange(n, dtype=torch.float64) * L / n
    X, Y = torch.meshgrid(x, x, indexing="ij")
    return amp * torch.cos(2 * math.pi * (kx * X + ky * Y) / L)


@pytest.mark.parametrize("s", [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("L", [1.0, 2 * math.pi])
def test_single_mode_analytic(s, L):
    kx, ky, amp = 3, 2, 1.7
    u = mode(32, kx, ky, L, amp)[None]
    # ‖A cos(k·x)‖²_{L²} = A² L² / 2 and the weight is (1 + 4π²|k|²/L²)^s
    expected = math.sqrt(amp ** 2 * L ** 2 / 2 * (1 + 4 * math.pi ** 2 * (kx ** 2 + ky ** 2) / L ** 2) ** s)
    assert sobolev_norm(u, s, L).item() == pytest.approx(expected, rel=1e-10)


def test_orthogonal_modes_add_in_squares():
    a, b = mode(24, 1, 0)[None], mode(24, 4, 5, amp=0.3)[None]
    for s in (-1.0, 0.0, 1.5):
        lhs = sobolev_norm(a + b, s) ** 2
        rhs = sobolev_norm(a, s) ** 2 + sobolev_norm(b, s) ** 2
        assert lhs.item() == pytest.approx(rhs.item(), rel=1e-10)


def test_zero_padding_spectrum_keeps_norm():
    from neuropde.pde.spectral import fourier_resample

    g = torch.Generator().manual_seed(0)
    u = torch.randn(2, 16, 16, dtype=torch.float64, generator=g)
    u = fourier_resample(fourier_resample(u, 12), 16)  # band-limit below both Nyquist limits
    fine = fourier_resample(u, 40)
    for s in (-1.0, 0.0, 1.0):
        assert torch.allclose(sobolev_norm(u, s), sobolev_norm(fine, s), rtol=1e-10)


def test_s0_is_l2_riemann_sum_and_bochner():
    g = torch.Generator().manual_seed(1)
    u = torch.randn(3, 5, 16, 16, dtype=torch.float64, generator=g)  # (B, T, X, Y)
    dt, L = 0.2, 2.0
    riemann = torch.sqrt(dt * (L / 16) ** 2 * (u ** 2).sum(dim=(1, 2, 3)))
    assert torch.allclose(sobolev_norm(u, 0.0, L, dt=dt), riemann, rtol=1e-12)


def test_relative_errors():
    y = torch.randn(4, 3, 8, 8)
    assert rel_l2(y, y).item() == 0.0
    assert rel_l2(1.1 * y, y).item() == pytest.approx(0.1, rel=1e-5)
    per_frame = rel_l2_per_frame(torch.cat([y[:, :1] * 1.2, y[:, 1:]], 1), y)
    assert per_frame[0].item() == pytest.approx(0.2, rel=1e-5) and per_frame[1:].abs().max() == 0
    assert rel_sobolev(1.5 * y, y, -1.0).item() == pytest.approx(0.5, rel=1e-5)
    with pytest.raises(ValueError, match="rel_l2, h1 or sobolev"):
        make_loss("l3")


@pytest.mark.parametrize("s", [-2.0, -1.0, 0.0, 1.0, 2.0])
def test_one_dimensional_mode(s):
    L, k, n = 3.0, 5, 40
    x = torch.arange(n, dtype=torch.float64) * L / n
    u = torch.sin(2 * math.pi * k * x / L)[None]
    expected = math.sqrt(L / 2 * (1 + 4 * math.pi ** 2 * k ** 2 / L ** 2) ** s)
    assert sobolev_norm(u, s, L, ndim=1).item() == pytest.approx(expected, rel=1e-10)
    # the same mode as space-time data (B, T, X) with T = 3 frames, dt = 0.5: Bochner sum
    ut = u[:, None].expand(1, 3, n)
    assert sobolev_norm(ut, s, L, ndim=1, dt=0.5).item() == pytest.approx(expected * math.sqrt(1.5), rel=1e-10)
