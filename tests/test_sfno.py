"""Tests of the Spatiotemporal FNO (neuropde.models.sfno.SFNO)."""

import math

import pytest
import torch

from neuropde.models.sfno import SFNO

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"),
        ],
    ),
]
TINY = dict(modes=(4, 4, 3), width=8, n_layers=3, t_latent=6)


pytestmark = pytest.mark.usefixtures("one_thread")


def band_limited(batch, frames, nx, ny, k_max=4, seed=0, dtype=torch.float64):
    """Random trajectories (batch, frames, nx, ny) with spatial frequencies |k| <= k_max."""
    g = torch.Generator().manual_seed(seed)
    k = torch.arange(-k_max, k_max + 1, dtype=torch.float64)
    x = torch.arange(nx, dtype=torch.float64) / nx
    y = torch.arange(ny, dtype=torch.float64) / ny
    kx, ky = k[:, None, None, None], k[None, :, None, None]
    phase = 2 * math.pi * (kx * x[:, None] + ky * y[None, :])  # (k_x, k_y, x, y)
    c = torch.randn(2, batch, frames, k.numel(), k.numel(), generator=g, dtype=torch.float64)
    c = c / (1 + k[:, None] ** 2 + k[None, :] ** 2)  # decaying spectrum, like vorticity
    u = torch.einsum("btij,ijxy->btxy", c[0], torch.cos(phase))
    u = u + torch.einsum("btij,ijxy->btxy", c[1], torch.sin(phase))
    return u.to(dtype)


def n_real_parameters(model):
    return sum(p.numel() * (2 if p.is_complex() else 1) for p in model.parameters())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "shape, t_out",
    [
        ((2, 10, 16, 16), 10),
        ((1, 3, 17, 12), 1),
        ((2, 5, 9, 11), 25),
        ((1, 1, 12, 15), 4),
        ((1, 12, 8, 8), 6),
    ],
)
def test_output_shapes(shape, t_out, device):
    model = SFNO(**TINY).to(device)
    y = model(torch.randn(*shape, device=device), t_out)
    assert y.shape == (shape[0], t_out, *shape[2:]) and y.device.type == device
    assert torch.isfinite(y).all()


def test_default_config_runs_on_small_odd_grid():
    # default modes (12, 12, 5) exceed what a 13 x 10 grid holds: clipped, no error
    y = SFNO()(torch.randn(1, 10, 13, 10), 7)
    assert y.shape == (1, 7, 13, 10)


def test_forward_is_output_operator_of_features():
    torch.manual_seed(0)
    model = SFNO(**TINY)
    x = torch.randn(2, 4, 12, 10)
    r, last = model.features(x)
    assert r.shape == (2, 1, 12, 10, TINY["t_latent"])
    assert torch.equal(last, x[:, -1])
    assert torch.equal(model(x, 7), model.output_operator(r, last, 7))


def reference_forward(model, x, t_out):
    """SFNO written out step by step from the method note (sections 2.2-2.3), reusing
    the model's (separately tested) layers but none of its wiring."""
    lift, act = model.lifting, model.act
    b, t_in, nx, ny = x.shape
    c, beta, max_t = model.width, lift.beta, lift.max_t_in
    t = torch.arange(1, t_in + 1, dtype=x.dtype) / max_t
    channels = [torch.arange(nx, dtype=x.dtype)[:, None, None].expand(nx, ny, t_in) / nx,
                torch.arange(ny, dtype=x.dtype)[None, :, None].expand(nx, ny, t_in) / ny,
                t.expand(nx, ny, t_in)]
    for k in range(1, c - 2):
        wave = torch.sin(math.pi * k * t) if k % 2 else torch.cos(math.pi * k * t)
        channels.append((torch.exp(beta * t) * wave).expand(nx, ny, t_in))
    v = x.permute(0, 2, 3, 1)[:, None] + torch.stack(channels)[None]  # (b, c, x, y, t_in)
    v = torch.nn.functional.group_norm(v, 1, lift.norm.weight, lift.norm.bias, eps=1e-7)
    v = lift.proj(v)
    v = act(v[..., -1:] + lift.ffn(lift.sconv(v, out_sizes=(None, None, model.t_latent))))
    for sconv, ffn, skip in zip(model.spectral, model.ffn, model.skip):
        v = act(ffn(sconv(v)) + skip(v))
    last = x[:, -1][:, None, :, :, None]
    s = torch.cat([last, model.reduction(v)], dim=-1)  # (b, 1, x, y, T_lat + 1)
    n = model.t_latent + 1
    s = torch.cat([torch.zeros_like(s), s], dim=-1)  # zeros in front
    y = model.output_operator.sconv(s, out_sizes=(None, None, t_out + 1 + n))[..., -t_out:]
    return (last + y)[:, 0].permute(0, 3, 1, 2)


def test_matches_step_by_step_reference():
    torch.manual_seed(3)
    model = SFNO(**TINY, beta=0.3).double()
    with torch.no_grad():
        lift, head = model.lifting, model.output_operator
        for p in (lift.norm.weight, lift.norm.bias, head.sconv.bias):
            p.copy_(torch.randn_like(p))
    x = band_limited(2, 5, 11, 8, k_max=3)
    with torch.no_grad():
        assert torch.allclose(model(x, 9), reference_forward(model, x, 9), atol=1e-12)


@pytest.mark.parametrize("coarse, ratio", [((32, 32), 2), ((21, 16), 3)])
def test_zero_shot_resolution(coarse, ratio):
    """Band-limited input at a coarse grid and at ratio x finer: same output on shared points.

    Measured over 3 seeds: relative gap 3e-5 to 6e-5 (32 -> 64) and 8e-5 to 1.4e-4
    (21 x 16 -> 63 x 48) of the part the network adds to the last frame; a forward FFT
    without its 1/N normalisation gives about 1e3.
    """
    torch.manual_seed(0)
    model = SFNO(modes=(8, 8, 4), width=12, n_layers=4, t_latent=6).double()
    fine = band_limited(2, 5, coarse[0] * ratio, coarse[1] * ratio)
    x = fine[..., ::ratio, ::ratio]
    assert torch.allclose(x, band_limited(2, 5, *coarse), atol=1e-12)
    with torch.no_grad():
        y_c = model(x, 7)
        y_f = model(fine, 7)[..., ::ratio, ::ratio]
    learned = (y_c - x[:, -1:]).norm()  # without the skip, which agrees trivially
    assert (y_c - y_f).norm() / learned < 1e-3


def test_t_out_is_length_consistent():
    """Asking for more frames samples the same latent-time polynomial more densely.

    The output operator evaluates its iFFT on N = t_out + T_lat + 2 points and keeps
    the last t_out; with t_out2 = 2 t_out + T_lat + 2 the grid doubles, so every
    other frame of the longer output reproduces the shorter one exactly (without the
    n_out / n_in factor of pitfall 4 the spectral part would halve).
    """
    torch.manual_seed(1)
    t_lat, t_out = TINY["t_latent"], 5
    model = SFNO(**TINY).double()
    with torch.no_grad():
        model.output_operator.sconv.bias.normal_()
    x = band_limited(2, 4, 12, 10, k_max=3)
    with torch.no_grad():
        short, long = model(x, t_out), model(x, 2 * t_out + t_lat + 2)
    assert torch.allclose(long[:, t_lat + 2 :: 2], short, atol=1e-12)
    assert (short - x[:, -1:]).abs().max() > 1e-2  # the spectral part is not negligible


def test_output_operator_is_affine_in_its_parameters():
    """Given cached features, the output is affine in the output layer's weights and
    biases: what makes Spectral-Refiner's last-layer fine-tuning convex."""
    torch.manual_seed(2)
    model = SFNO(**TINY).double()
    r, last = model.features(band_limited(1, 4, 10, 12, k_max=3))
    head = model.output_operator
    names = ["sconv.bias", "sconv.weight"]
    p1 = {n: torch.randn_like(p) for n, p in head.named_parameters()}
    p2 = {n: torch.randn_like(p) for n, p in head.named_parameters()}
    assert sorted(p1) == names
    mix = {n: 0.3 * p1[n] + 0.7 * p2[n] for n in names}
    f = lambda p: torch.func.functional_call(head, p, (r, last, 5))
    assert torch.allclose(f(mix), 0.3 * f(p1) + 0.7 * f(p2), atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes(dtype):
    model = SFNO(**TINY).to(dtype)
    complex_dtype = torch.cfloat if dtype == torch.float32 else torch.cdouble
    assert model.lifting.sconv.weight.dtype == complex_dtype
    y = model(torch.randn(1, 4, 10, 9, dtype=dtype), 3)
    assert y.dtype == dtype


def test_parameter_count_matches_reference():
    # Reference (torch-cfd fno/sfno.py, modes (12,12,5), width 20, 4 layers): 9,242,461
    # = 4 spectral layers 20x20 (4 corners x 12x12x5 modes x 2 reals) 9,216,000
    # + lifting GroupNorm 40, 1x1 conv 420, FFN 3,300 + body 3 x (FFN 3,300 + 1x1 conv 420)
    # + reduction 21 + output layer 1x1 weights and biases 2 x 5,760.
    assert n_real_parameters(SFNO()) == 9_242_461


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        SFNO(width=21)
    with pytest.raises(ValueError):
        SFNO(activation="swishy")
    model = SFNO(**TINY, max_t_in=5)
    with pytest.raises(ValueError):
        model(torch.randn(1, 6, 8, 8), 2)
    with pytest.raises(ValueError):
        model(torch.randn(1, 4, 8, 8), 0)


def test_overfits_two_samples():
    """100 Adam steps on 2 fixed 16^2 samples cut the relative L2 error at least 10x
    (measured 18x to 42x over 6 seeds of model and data)."""
    torch.manual_seed(0)
    x = band_limited(2, 4, 16, 16, k_max=2, seed=1, dtype=torch.float32)
    a, b = band_limited(2, 2, 16, 16, k_max=2, seed=2, dtype=torch.float32).unbind(1)
    t = torch.arange(1, 5, dtype=torch.float32)[:, None, None] / 4
    y = a[:, None] + b[:, None] * t  # smooth in time, unrelated to the input
    model = SFNO(modes=(4, 4, 3), width=8, t_latent=6)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def rel_l2():
        err = (model(x, 4) - y).flatten(1).norm(dim=1) / y.flatten(1).norm(dim=1)
        return err.mean()

    first = rel_l2().item()
    for _ in range(100):
        loss = rel_l2()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        last = rel_l2().item()
    assert first / last >= 10, (first, last)
