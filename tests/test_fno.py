"""neuraloperator FNO wrapper: odd grid sizes and checkpoint metadata."""
import math

import pytest
import torch
from neuralop.layers.spectral_convolution import SpectralConv

from neuropde.models.fno import FNO


def band_limited(n, channels=2, K=10, seed=1):
    """A random periodic field with modes |k| <= K, sampled on an n×n grid: (1, C, n, n)."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(channels, 2 * K + 1, 2 * K + 1, dtype=torch.complex128, generator=g)
    k = torch.arange(-K, K + 1, dtype=torch.float64)
    x = torch.arange(n, dtype=torch.float64) / n
    e = torch.exp(2j * math.pi * k[:, None] * x[None, :])
    return torch.einsum("cab,ai,bj->cij", c, e, e).real[None].float()


def test_neuralop_spectral_conv_is_wrong_on_odd_grids():
    """The bug we work around: if this starts failing, neuraloperator fixed it and the wrapper can go."""
    torch.manual_seed(0)
    conv = SpectralConv(2, 2, n_modes=(6, 6))
    with torch.no_grad():
        even = conv(band_limited(32)) - conv(band_limited(128))[..., ::4, ::4]
        odd = conv(band_limited(33)) - conv(band_limited(132))[..., ::4, ::4]
    assert even.norm() / conv(band_limited(32)).norm() < 1e-5
    assert odd.norm() / conv(band_limited(33)).norm() > 0.1


@pytest.mark.parametrize("n", [33, 31, 45])
def test_wrapper_gives_consistent_results_on_odd_grids(n):
    torch.manual_seed(0)
    model = FNO(t_in=2, t_out=3, modes=(6, 6), width=8, n_layers=2, positional_embedding=None).eval()
    with torch.no_grad():
        odd = model(band_limited(n, K=4))
        fine = model(band_limited(4 * n, K=4))[..., ::4, ::4]
        raw = model.fno(band_limited(n, K=4))
    assert odd.shape == (1, 3, n, n)
    # as consistent as even grids are (measured: 32² 6e-4, 33² 5e-5); unwrapped neuralop: 0.15
    assert (odd - fine).norm() / fine.norm() < 2e-3
    assert (raw - fine).norm() / fine.norm() > 5e-2


def test_frame_count_errors_name_the_fix():
    model = FNO(t_in=2, t_out=3, modes=(4, 4), width=4, n_layers=1)
    with pytest.raises(ValueError, match="data.window.t_in=2"):
        model(torch.randn(1, 5, 16, 16))
    with pytest.raises(ValueError, match="model=sfno"):
        model(torch.randn(1, 2, 16, 16), t_out=7)


def test_one_dimensional_odd_grids_are_consistent():
    torch.manual_seed(0)
    model = FNO(t_in=1, t_out=2, modes=(8,), width=8, n_layers=2, positional_embedding=None).eval()
    fine = band_limited(4 * 33, channels=1, K=4)[:, :, 0]  # a 1-D band-limited field (1, 1, 132)
    with torch.no_grad():
        odd, ref = model(fine[..., ::4]), model(fine)[..., ::4]
    assert odd.shape == (1, 2, 33)
    assert (odd - ref).norm() / ref.norm() < 2e-3
    with pytest.raises(ValueError, match="spatial axes"):
        model(torch.randn(1, 1, 16, 16))


@pytest.mark.parametrize("n", [29, 64, 85, 421])
def test_padding_for_non_periodic_data_ends_on_an_even_grid(n):
    model = FNO(t_in=1, t_out=1, modes=(4, 4), width=4, n_layers=1, pad_fraction=0.1)
    pad = model.padding(n)
    assert (n + pad) % 2 == 0 and math.ceil(0.1 * n) <= pad <= math.ceil(0.1 * n) + 1
    seen = []
    handle = model.fno.fno_blocks.convs[0].register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[-2:]))
    with torch.no_grad():
        y = model(torch.randn(2, 1, n, n - 1))
    handle.remove()
    assert y.shape == (2, 1, n, n - 1)
    assert seen == [torch.Size([n + pad, n - 1 + model.padding(n - 1)])]
    with pytest.raises(ValueError, match="pad_fraction"):
        FNO(t_in=1, t_out=1, pad_fraction=-0.1)


def test_padding_per_axis_keeps_the_periodic_axis_periodic():
    """pad_fraction=[0, 0.1]: only the second axis is padded (a box with walls in y); the first stays
    periodic, so the network commutes with shifts along it (and would not, were it padded)."""
    torch.manual_seed(0)
    model = FNO(t_in=1, t_out=1, modes=(4, 4), width=4, n_layers=1, pad_fraction=[0.0, 0.1],
                positional_embedding=None)
    assert model.padding(29, 0) == 0 and (28 + model.padding(28, 1)) % 2 == 0
    seen = []
    handle = model.fno.fno_blocks.convs[0].register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[-2:]))
    x = torch.randn(2, 1, 29, 28)
    with torch.no_grad():
        y = model(x)
        shifted = model(torch.roll(x, 5, dims=2))
        across = model(torch.roll(x, 5, dims=3))
    handle.remove()
    assert y.shape == x.shape and seen[0] == torch.Size([58, 32])  # the odd periodic axis refined, not padded
    assert torch.allclose(shifted, torch.roll(y, 5, dims=2), atol=1e-5)
    assert not torch.allclose(across, torch.roll(y, 5, dims=3), atol=1e-3)
    with pytest.raises(ValueError, match="one per axis"):
        FNO(t_in=1, t_out=1, modes=(4, 4), pad_fraction=[0.1, 0.1, 0.1])
