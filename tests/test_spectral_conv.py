"""Tests of neuropde.nn.SpectralConv: exactness, resolution and length consistency."""

import itertools
import math

import numpy as np
import pytest
import torch
from torch.func import functional_call

from neuropde.nn import SpectralConv


pytestmark = pytest.mark.usefixtures("one_thread")


def band_limited(shape, channels, k_max, seed=0):
    """Random real field (1, channels, *shape) with frequencies |k_a| <= k_max[a], float64."""
    g = torch.Generator().manual_seed(seed)
    axes = [torch.arange(n, dtype=torch.float64) / n for n in shape]
    grids = torch.meshgrid(*axes, indexing="ij")
    u = torch.zeros(1, channels, *shape, dtype=torch.float64)
    for k in itertools.product(*[range(-m, m + 1) for m in k_max]):
        phase = 2 * math.pi * sum(ki * gi for ki, gi in zip(k, grids))
        a, b = torch.randn(2, channels, 1, generator=g, dtype=torch.float64)
        wave = a * torch.cos(phase).flatten() + b * torch.sin(phase).flatten()
        u += wave.view(1, channels, *shape)
    return u


def slow_reference(layer, x, n_out):
    """Explicit DFT over the kept modes, mode by mode, in numpy float64.

    y(x') = sum_k c_k Re(y_hat(k) e^{2 pi i k.x'}), c_k = 1 on the last-axis k = 0
    plane, 2 elsewhere (the omitted conjugate half); only frequencies |k_a| < n/2
    on the output grid take part, and input coefficients of frequencies the input
    grid does not hold are zero (the bias still acts there).
    """
    x = x.detach().double().numpy()
    w = layer.weight.detach().cdouble().numpy()
    bias = None if layer.bias is None else layer.bias.detach().cdouble().numpy()
    n_in, d = x.shape[2:], layer.dim
    g_in = np.meshgrid(*[np.arange(n) / n for n in n_in], indexing="ij")
    g_out = np.meshgrid(*[np.arange(n) / n for n in n_out], indexing="ij")
    y = np.zeros((x.shape[0], w.shape[1], *n_out))
    # (signed frequency, index into the weight) per axis
    axes = [
        [(k, k) for k in range(m)] + ([(k, 2 * m + k) for k in range(-m, 0)] if a < d - 1 else [])
        for a, m in enumerate(layer.modes)
    ]
    for combo in itertools.product(*axes):
        k = [c[0] for c in combo]
        if any(abs(ki) >= n / 2 for ki, n in zip(k, n_out)):
            continue  # the output grid cannot carry this mode
        idx = tuple(c[1] for c in combo)
        e_in = np.exp(-2j * np.pi * sum(ki * gi for ki, gi in zip(k, g_in)))
        x_hat = (x * e_in).reshape(*x.shape[:2], -1).mean(-1)  # (B, C_in)
        if any(abs(ki) >= n / 2 for ki, n in zip(k, n_in)):
            x_hat = 0 * x_hat  # the input grid does not hold it: a zero coefficient
        y_hat = x_hat @ w[(slice(None), slice(None)) + idx]  # (B, C_out)
        if bias is not None:
            y_hat = y_hat + layer.delta * bias[idx]
        e_out = np.exp(2j * np.pi * sum(ki * gi for ki, gi in zip(k, g_out)))
        wave = np.real(y_hat[:, :, None] * e_out.reshape(1, 1, -1)).reshape(y.shape)
        y += (1 if k[-1] == 0 else 2) * wave
    return torch.from_numpy(y)


@pytest.mark.parametrize(
    "modes, shape, out_sizes",
    [
        ((4,), (9,), None),
        ((4,), (9,), 13),  # temporal-style resampling
        ((6,), (7,), 15),  # output holds modes the input lacks: bias only there
        ((3, 4), (7, 10), None),
        ((5, 7), (7, 10), None),  # modes beyond what the grid holds: clipped
        ((3, 4), (7, 10), (12, 5)),  # spatial resampling too
        ((2, 3, 2), (5, 6, 7), (8, 6, 9)),
    ],
)
@pytest.mark.parametrize("transform", ["fft", "dft"])
def test_matches_slow_reference(modes, shape, out_sizes, transform):
    torch.manual_seed(0)
    layer = SpectralConv(2, 3, modes, bias=True, delta=0.3, transform=transform).double()
    with torch.no_grad():
        layer.bias.copy_(torch.randn_like(layer.bias))
    x = torch.randn(2, 2, *shape, dtype=torch.float64)
    y = layer(x, out_sizes)
    expected = slow_reference(layer, x, y.shape[2:])
    assert torch.allclose(y, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    "n, modes",
    [((32,), (8,)), ((33,), (8,)), ((32, 33), (6, 6)), ((33, 33), (8, 8)), ((9, 8, 7), (3, 3, 3))],
)
@pytest.mark.parametrize("transform", ["fft", "dft"])
def test_resolution_consistency(n, modes, transform):
    """A band-limited input at n and at 4n (subsampled) gives the same output."""
    torch.manual_seed(0)
    layer = SpectralConv(2, 2, modes, bias=True, transform=transform).double()
    with torch.no_grad():
        layer.bias.copy_(torch.randn_like(layer.bias))
    k_max = [min(4, (s - 1) // 2) for s in n]
    coarse = band_limited(n, 2, k_max)
    fine = band_limited([4 * s for s in n], 2, k_max)
    assert torch.allclose(fine[(..., *[slice(None, None, 4)] * len(n))], coarse, atol=1e-10)
    y_c, y_f = layer(coarse), layer(fine)[(..., *[slice(None, None, 4)] * len(n))]
    assert (y_c - y_f).norm() / y_c.norm() < 1e-10


def test_resolution_check_catches_neuralop_odd_size_bug():
    """The check above is sharp: neuraloperator 2.0's SpectralConv fails it at odd n only."""
    nsc = pytest.importorskip("neuralop.layers.spectral_convolution").SpectralConv
    torch.manual_seed(0)
    layer = nsc(2, 2, (16, 16))  # neuraloperator counts modes over both signs
    gaps = {}
    for n in (32, 33):
        coarse = band_limited((n, n), 2, (4, 4)).float()
        fine = band_limited((4 * n, 4 * n), 2, (4, 4)).float()
        with torch.no_grad():
            y_c, y_f = layer(coarse), layer(fine)[..., ::4, ::4]
        gaps[n] = ((y_c - y_f).norm() / y_c.norm()).item()
    assert gaps[32] < 1e-5 and gaps[33] > 0.1, gaps


@pytest.mark.parametrize("n_in, n_out", [(16, 40), (16, 9), (15, 16), (12, 12)])
@pytest.mark.parametrize("transform", ["fft", "dft"])
def test_output_length_keeps_amplitude(n_in, n_out, transform):
    """Resampling onto n_out points evaluates the same trigonometric polynomial (pitfall 4)."""
    layer = SpectralConv(1, 1, (3, 4), transform=transform).double()
    with torch.no_grad():
        layer.weight.fill_(1.0)  # identity on the kept modes
    s = torch.arange(n_in, dtype=torch.float64) / n_in
    t = torch.arange(n_out, dtype=torch.float64) / n_out
    x1 = torch.arange(6, dtype=torch.float64) / 6

    def field(tt):  # modes (k_x, k_t) = (0, 0), (1, 1), (-2, 3) all kept
        return (0.7 + torch.cos(2 * math.pi * (x1[:, None] + tt[None]))
                + 0.5 * torch.sin(2 * math.pi * (-2 * x1[:, None] + 3 * tt[None])))[None, None]

    y = layer(field(s), out_sizes=n_out)
    assert y.shape == (1, 1, 6, n_out)
    assert torch.allclose(y, field(t), atol=1e-12)


@pytest.mark.parametrize("transform", ["fft", "dft"])
def test_output_length_random_weights(transform):
    """Doubling the output length interleaves new points between the old ones."""
    torch.manual_seed(1)
    layer = SpectralConv(2, 3, (3, 3, 4), bias=True, transform=transform).double()
    with torch.no_grad():
        layer.bias.copy_(torch.randn_like(layer.bias))
    x = torch.randn(2, 2, 8, 7, 10, dtype=torch.float64)
    y11, y22 = layer(x, out_sizes=11), layer(x, out_sizes=22)
    assert torch.allclose(y22[..., ::2], y11, atol=1e-12)
    # and a bigger output does not shrink the mode amplitudes
    assert abs(y22.std() / y11.std() - 1) < 0.2


def test_hermitian_plane(monkeypatch):
    """The spectrum handed to irfftn is Hermitian on the last-axis k = 0 plane, and
    the output depends only on the Hermitian part of the weights there."""
    torch.manual_seed(2)
    layer = SpectralConv(2, 2, (3, 3, 3), transform="fft").double()
    x = torch.randn(1, 2, 7, 8, 6, dtype=torch.float64)

    seen = []
    irfftn = torch.fft.irfftn
    monkeypatch.setattr(torch.fft, "irfftn", lambda z, **kw: seen.append(z) or irfftn(z, **kw))
    y = layer(x)
    monkeypatch.undo()
    plane = seen[0][..., 0]
    mirrored = torch.roll(torch.flip(plane, (-2, -1)), (1, 1), (-2, -1))
    assert plane.abs().max() > 1e-3
    assert torch.allclose(plane, mirrored.conj(), atol=1e-14)
    assert not y.is_complex()

    # Symmetrise the weight plane over the frequency pairs (k, -k) it holds
    # (|k| <= m - 1 on each axis); W and W_sym then must give the same output.
    w = layer.weight.detach()
    idx = torch.tensor([0, 1, 2, 4, 5])  # frequencies 0, 1, 2, -2, -1 of the 6 stored
    neg = torch.tensor([0, 5, 4, 2, 1])  # index of -k for each of those
    w0 = w[..., 0][:, :, idx][:, :, :, idx]
    w0_mirror = w[..., 0][:, :, neg][:, :, :, neg]
    w_sym = w.clone()
    w_sym[:, :, idx[:, None], idx[None, :], 0] = 0.5 * (w0 + w0_mirror.conj())
    assert (w_sym - w).abs().max() > 0.05  # the raw weights are far from Hermitian
    y_sym = functional_call(layer, {"weight": w_sym}, (x,))
    assert torch.allclose(y, y_sym, atol=1e-13)
    # the matmul path takes the real part on that plane instead: the same function
    layer.transform = "dft"
    assert torch.allclose(layer(x), y, atol=1e-13)
    assert torch.allclose(functional_call(layer, {"weight": w_sym}, (x,)), y, atol=1e-13)


@pytest.mark.parametrize("transform", ["fft", "dft"])
def test_mode_clipping_equals_cropped_layer(transform):
    """Modes beyond what the grid holds act as zeros: same as a layer cut to the grid."""
    torch.manual_seed(3)
    big = SpectralConv(2, 2, (10, 10), bias=True, transform=transform).double()
    with torch.no_grad():
        big.bias.copy_(torch.randn_like(big.bias))
    # a (7, 8) grid holds frequencies -3..3 on x and 0..3 on the half axis y
    small = SpectralConv(2, 2, (4, 4), bias=True, transform=transform).double()
    keep = torch.tensor([0, 1, 2, 3, 16, 17, 18, 19])  # big's frequencies 0..3, -4..-1
    with torch.no_grad():
        small.weight.copy_(big.weight[:, :, keep, :4])
        small.bias.copy_(big.bias[keep, :4])
    x = torch.randn(3, 2, 7, 8, dtype=torch.float64)
    assert torch.allclose(big(x), small(x), atol=1e-13)
    # clipping is consistent across resolutions too
    coarse, fine = band_limited((9, 7), 2, (4, 3)), band_limited((36, 28), 2, (4, 3))
    big.bias = None
    assert torch.allclose(big(coarse), big(fine)[..., ::4, ::4], atol=1e-11)


@pytest.mark.parametrize("transform", ["fft", "dft"])
def test_gradients_reach_complex_weights(transform):
    torch.manual_seed(4)
    layer = SpectralConv(2, 2, (3, 4), bias=True, transform=transform).double()
    x = torch.randn(2, 2, 9, 8, dtype=torch.float64)
    layer(x, out_sizes=(None, 11)).square().sum().backward()
    for p in (layer.weight, layer.bias):
        assert p.grad is not None and p.grad.is_complex() and p.grad.abs().max() > 0
    # Wirtinger gradients agree with finite differences, through the Hermitian fix
    small = SpectralConv(1, 1, (2, 2), bias=True, transform=transform).double()
    x = torch.randn(1, 1, 5, 6, dtype=torch.float64)
    w = small.weight.detach().clone().requires_grad_()
    b = torch.randn(4, 2, dtype=torch.cdouble, requires_grad=True)

    def f(w, b):
        return functional_call(small, {"weight": w, "bias": b}, (x,), {"out_sizes": (None, 7)})

    assert torch.autograd.gradcheck(f, (w, b))


def test_dtype_casts_keep_complex_weights():
    layer = SpectralConv(2, 2, (3, 3), bias=True)
    w = layer.weight.detach().clone()
    for cast in (lambda m: m.double(), lambda m: m.to(torch.float64)):
        m = cast(SpectralConv(2, 2, (3, 3), bias=True))
        assert m.weight.dtype == torch.cdouble and m.bias.dtype == torch.cdouble
    m = layer.to(torch.float64)
    assert torch.allclose(m.weight.to(torch.cfloat), w)  # imaginary part kept
    assert m.float().weight.dtype == torch.cfloat
    y = m.double()(torch.randn(1, 2, 8, 8, dtype=torch.float64))
    assert y.dtype == torch.float64


def test_rejects_bad_input():
    layer = SpectralConv(2, 2, (3, 3))
    with pytest.raises(ValueError):
        layer(torch.randn(1, 2, 8))
    with pytest.raises(ValueError):
        layer(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError):
        SpectralConv(1, 1, (0, 3))


@pytest.mark.parametrize("shape, modes", [((64, 64), (6, 7)), ((256, 256), (16, 17)), ((40,), (5,)),
                                          ((64, 64, 10), (12, 12, 5)), ((30, 30), (8, 8)), ((128, 128), (32, 33)),
                                          ((64, 64), (24, 25))])
def test_auto_transform_picks_dft_for_few_modes(shape, modes):
    """auto = dft when every axis keeps at most a quarter of its points (half, up to 64 points);
    same output either way."""
    torch.manual_seed(5)
    layer = SpectralConv(2, 2, modes, bias=True).double()
    x = torch.randn(1, 2, *shape, dtype=torch.float64)
    kept = [2 * min(m, (n - 1) // 2) for m, n in zip(modes[:-1], shape[:-1])] + [min(modes[-1], (shape[-1] + 1) // 2)]
    expected = all(4 * k <= n or (n <= 64 and 2 * k <= n) for k, n in zip(kept, shape))
    assert layer._use_dft(list(shape), [(k, 0) for k in kept]) == expected
    y = layer(x)
    layer.transform = "fft"
    assert torch.allclose(layer(x), y, atol=1e-12)


def test_dft_path_is_one_graph_without_complex_ops():
    """torch.compile sees the matmul path as a single graph (the FFT path breaks on complex ops)."""
    layer = SpectralConv(3, 3, (4, 5), bias=True, transform="dft")
    explain = torch._dynamo.explain(layer)(torch.randn(2, 3, 32, 32))
    assert explain.graph_count == 1 and explain.graph_break_count == 0, explain.break_reasons


def test_spectra_stay_fp32_under_bf16_autocast():
    """Under autocast the 1x1 layers may run in bf16; the spectral layer computes in fp32."""
    torch.manual_seed(6)
    for transform in ("fft", "dft"):
        layer = SpectralConv(2, 2, (4, 5), transform=transform)
        x = torch.randn(2, 2, 32, 32)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer(x.bfloat16())
        assert y.dtype == torch.float32
        assert torch.allclose(y, layer(x.bfloat16().float()), atol=1e-6)
