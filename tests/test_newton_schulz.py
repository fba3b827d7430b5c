"""Newton–Schulz orthogonalisation: singular-value band, SVD polar oracle, torch.optim.Muon, batching."""
from __future__ import annotations

import math

import pytest
import torch

from neuropde.optim.newton_schulz import newton_schulz, orthogonalize_spectral_weight, scale_factor

pytestmark = pytest.mark.usefixtures("one_thread")

A, B, C = 3.4445, -4.7750, 2.0315


def _scalar_ns(sigma: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """The fp64 scalar map σ ↦ aσ + bσ³ + cσ⁵ that NS applies to each singular value."""
    for _ in range(steps):
        sigma = A * sigma + B * sigma**3 + C * sigma**5
    return sigma


def _with_singular_values(s: torch.Tensor, m: int, n: int, complex_: bool = False, seed: int = 0):
    """An m x n matrix U diag(s) Vᴴ with random orthonormal (unitary) U, V; len(s) = min(m, n)."""
    g = torch.Generator().manual_seed(seed)
    dt = torch.complex128 if complex_ else torch.float64
    k = len(s)
    U, _ = torch.linalg.qr(torch.randn(m, k, generator=g, dtype=dt))
    V, _ = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=dt))
    return U @ torch.diag(s.to(dt)) @ V.mH


def _polar(G: torch.Tensor) -> torch.Tensor:
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    return U @ Vh


def _cosine(x: torch.Tensor, y: torch.Tensor) -> float:
    # Real part of the Hermitian inner product: the cosine of the real embedding (works for real too).
    x, y = x.to(torch.complex128).flatten(), y.to(torch.complex128).flatten()
    return float(torch.vdot(x, y).real / (x.norm() * y.norm()))


@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("shape", [(16, 40), (40, 16)])
def test_singular_value_band(shape, complex_):
    m, n = shape
    k = min(m, n)
    # Logspaced σ chosen so that after the Frobenius normalisation σ/‖G‖_F spans ≈ [1e-2, 1/‖s‖]
    # (all >= 1e-2): the band quoted in the reference applies to the normalised values.
    s = torch.logspace(math.log10(2e-2), 0, k, dtype=torch.float64)
    s_norm = s / s.norm()
    assert s_norm.min() >= 1e-2
    G = 37.0 * _with_singular_values(s, m, n, complex_)
    G = G.to(torch.complex64 if complex_ else torch.float32)
    out_sv = torch.linalg.svdvals(newton_schulz(G).to(torch.complex128 if complex_ else torch.float64))
    assert out_sv.min() > 0.66 and out_sv.max() < 1.15
    # Stronger: each singular value follows the scalar quintic map (fp32 rounding only).
    expected = _scalar_ns(s_norm).sort(descending=True).values
    torch.testing.assert_close(out_sv.sort(descending=True).values, expected, atol=2e-4, rtol=0)


def test_more_steps_or_wrong_coefficients_leave_band():
    """The band test can fail: one step leaves small σ near 3.44·σ, far below the band."""
    s = torch.logspace(-2, 0, 16, dtype=torch.float64)
    G = _with_singular_values(s, 16, 32).float()
    assert torch.linalg.svdvals(newton_schulz(G, steps=1)).min() < 0.66


def test_real_matches_svd_polar_and_torch_muon():
    g = torch.Generator().manual_seed(1)
    G = torch.randn(64, 32, generator=g)  # σ_min/σ_max ≈ 0.17: well conditioned
    polar = _polar(G.double())
    ours = newton_schulz(G)
    assert _cosine(ours, polar) > 0.95
    # torch.optim.Muon's own (private, bf16) NS: same direction; with dtype=bfloat16 nearly the same numbers.
    muon_ns = pytest.importorskip("torch.optim._muon")._zeropower_via_newtonschulz
    theirs = muon_ns(G, (A, B, C), 5, 1e-7).float()
    assert _cosine(theirs, polar) > 0.95
    assert _cosine(ours, theirs) > 0.99
    ours_bf16 = newton_schulz(G, dtype=torch.bfloat16)
    assert ours_bf16.dtype == torch.float32
    torch.testing.assert_close(ours_bf16, theirs, atol=5e-3, rtol=0)  # measured: identical


def test_complex_matches_complex_svd_polar():
    g = torch.Generator().manual_seed(2)
    G = torch.randn(48, 32, generator=g, dtype=torch.complex64)  # tall: exercises the conjugate transpose
    out = newton_schulz(G)
    assert out.dtype == torch.complex64
    assert _cosine(out, _polar(G.to(torch.complex128))) > 0.95
    # Square, well conditioned (σ ∈ [0.3, 1]): X Xᴴ has eigenvalues in the squared band, i.e. ≈ I.
    s = torch.linspace(0.3, 1.0, 24, dtype=torch.float64)
    Gs = _with_singular_values(s, 24, 24, complex_=True, seed=3).to(torch.complex64)
    X = newton_schulz(Gs).to(torch.complex128)
    assert _cosine(X, _polar(Gs.to(torch.complex128))) > 0.95
    eig = torch.linalg.eigvalsh(X @ X.mH)
    assert eig.min() > 0.66**2 and eig.max() < 1.15**2
    # bf16 complex does not exist: asking for bfloat16 must run (and equal) the complex64 path.
    torch.testing.assert_close(newton_schulz(Gs, dtype=torch.bfloat16), newton_schulz(Gs))


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
def test_batch_equals_loop(dtype):
    g = torch.Generator().manual_seed(4)
    G = torch.randn(3, 4, 12, 20, generator=g, dtype=dtype)
    out = newton_schulz(G)
    loop = torch.stack([newton_schulz(M) for M in G.reshape(-1, 12, 20)]).reshape(G.shape)
    torch.testing.assert_close(out, loop, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
def test_transpose_equivariance(dtype):
    g = torch.Generator().manual_seed(5)
    G = torch.randn(2, 10, 26, generator=g, dtype=dtype)
    torch.testing.assert_close(newton_schulz(G.mH), newton_schulz(G).mH, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(newton_schulz(G.mT), newton_schulz(G).mT, atol=1e-6, rtol=1e-5)


def test_spectral_weight_equals_per_mode_loop():
    g = torch.Generator().manual_seed(6)
    W = torch.randn(6, 10, 5, 3, generator=g, dtype=torch.complex64)  # (C_in, C_out, k1, k2)
    out = orthogonalize_spectral_weight(W, steps=5)
    assert out.shape == W.shape and out.dtype == W.dtype
    for i in range(5):
        for j in range(3):
            torch.testing.assert_close(out[:, :, i, j], newton_schulz(W[:, :, i, j]), atol=1e-5, rtol=1e-5)
    # 1-D modes (FNO1d) go through the same path.
    W1 = W[..., 0]
    torch.testing.assert_close(orthogonalize_spectral_weight(W1)[:, :, 2], newton_schulz(W1[:, :, 2]),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
def test_zero_input_gives_zero(dtype):
    out = newton_schulz(torch.zeros(2, 8, 12, dtype=dtype))
    assert torch.isfinite(torch.view_as_real(out) if dtype.is_complex else out).all()
    assert (out == 0).all()


def test_output_dtype_follows_input():
    G = torch.randn(8, 5, dtype=torch.float64)
    assert newton_schulz(G).dtype == torch.float64
    assert newton_schulz(G, dtype=torch.bfloat16).dtype == torch.float64


def test_scale_factor_table():
    assert scale_factor(2048, 512, "original") == pytest.approx(2.0)
    assert scale_factor(512, 2048, "original") == pytest.approx(1.0)
    assert scale_factor(2048, 512, "match_rms_adamw") == pytest.approx(0.2 * math.sqrt(2048))
    assert scale_factor(512, 2048, "match_rms_adamw") == pytest.approx(0.2 * math.sqrt(2048))
    with pytest.raises(ValueError):
        scale_factor(4, 4, "spectral_typo")


def test_fitted_coefficients_orthogonalise_better_on_their_shapes():
    """The per-shape table (experiments/optimizers/fit_ns_coefficients.py) beats Muon's coefficients
    on fresh Gaussian matrices of a fitted shape, and unknown shapes fall back to Muon's."""
    from neuropde.optim.newton_schulz import MUON_COEFFICIENTS, coefficients_for, newton_schulz

    assert coefficients_for(20, 20, "fitted") != MUON_COEFFICIENTS
    assert coefficients_for(80, 20, "fitted") == coefficients_for(20, 80, "fitted")
    assert coefficients_for(3, 1000, "fitted") == MUON_COEFFICIENTS  # no bucket near this shape
    with pytest.raises(ValueError, match="fitted"):
        coefficients_for(4, 4, "best")
    torch.manual_seed(0)
    for shape in [(20, 20), (32, 128), (64, 64)]:
        G = torch.randn(16, *shape, dtype=torch.float64)
        U, _, Vh = torch.linalg.svd(G, full_matrices=False)
        err = {which: (newton_schulz(G, coefficients=which, dtype=torch.float64) - U @ Vh).pow(2).mean().item()
               for which in ("muon", "fitted")}
        assert err["fitted"] < 0.5 * err["muon"], (shape, err)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_large_cpu_matrix_path_leaves_its_input_alone(dtype):
    """The one-matrix CPU path normalises in place only when the cast made a copy."""
    torch.manual_seed(0)
    G = torch.randn(160, 200).to(dtype)  # float32: the bfloat16 cast copies; bfloat16: it does not
    before = G.clone()
    out = newton_schulz(G, dtype=torch.bfloat16)
    assert torch.equal(G, before) and out.shape == G.shape
    s = torch.linalg.svdvals(out.float())
    assert 0.5 < s.min() and s.max() < 1.3  # and the result is still orthogonalised
