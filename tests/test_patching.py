"""Multi-grid patching (MG-TFNO domain decomposition): shapes, exact round trip, context windows."""
import pytest
import torch

from neuropde.nn.patching import MultiGridPatching


def coordinate_field(H: int, W: int) -> torch.Tensor:
    """(1, 1, H, W) with pixel (i, j) = i·W + j, so a value tells where it came from."""
    return torch.arange(H * W, dtype=torch.float64).reshape(1, 1, H, W)


def reference_window(f: torch.Tensor, top: int, left: int, Sh: int, Sw: int, k: int) -> torch.Tensor:
    """Sh × Sw coarse pixels, each the mean of the k × k fine block starting at (top + k·i, left + k·j),
    indices taken modulo the field size: written with plain loops, independently of the module."""
    H, W = f.shape
    out = torch.empty(Sh, Sw, dtype=f.dtype)
    for i in range(Sh):
        for j in range(Sw):
            block = [f[(top + k * i + a) % H, (left + k * j + b) % W] for a in range(k) for b in range(k)]
            out[i, j] = sum(block) / len(block)
    return out


@pytest.mark.parametrize("size", [64, 96, 100])
@pytest.mark.parametrize("levels", [0, 1, 2])
@pytest.mark.parametrize("padding", [0.0, 0.125])
def test_round_trip_is_exact_for_square_fields(one_thread, size, levels, padding):
    m = MultiGridPatching(levels, padding)
    x = torch.randn(2, 3, size, size)
    assert torch.equal(m.stitch(m.patch(x)[:, :3], (size, size)), x)


@pytest.mark.parametrize("shape,levels,padding", [
    ((100, 64), 2, 0.125),  # h = 25, w = 16: pad_h = round(3.125) = 3, pad_w = 2 (asymmetric)
    ((64, 100), 2, 0.1),    # h = 16, w = 25: pad_h = round(1.6) = 2, pad_w = round(2.5) = 3 (half up)
    ((37, 50), 3, 0.3),     # neither side divisible by 8: the grid wraps past H and W
    ((8, 5), 2, 0.5),       # tiny, odd, pads as large as the patch
])
def test_round_trip_is_exact_for_rectangular_and_indivisible_fields(one_thread, shape, levels, padding):
    m = MultiGridPatching(levels, padding)
    x = torch.randn(3, 2, *shape)
    assert torch.equal(m.stitch(m.patch(x)[:, :2], shape), x)


def test_patch_shapes(one_thread):
    B, C = 3, 2
    x = torch.randn(B, C, 64, 64)
    assert MultiGridPatching(1).patch(x).shape == (B * 4, 2 * C, 32, 32)
    assert MultiGridPatching(2).patch(x).shape == (B * 16, 3 * C, 16, 16)
    assert MultiGridPatching(2, 0.25).patch(x).shape == (B * 16, 3 * C, 16 + 2 * 4, 16 + 2 * 4)
    assert MultiGridPatching(2, 0.125).patch(torch.randn(B, C, 100, 64)).shape == (B * 16, 3 * C, 25 + 6, 16 + 4)
    m = MultiGridPatching(3, 0.1)
    assert m.patches_per_sample == 64 and m.in_channels(C) == 4 * C


def test_patch_order_is_batch_major_then_row_then_col(one_thread):
    m = MultiGridPatching(1)
    x = torch.randn(2, 1, 8, 8)
    p = m.patch(x)
    for b in range(2):
        for r in range(2):
            for c in range(2):
                assert torch.equal(p[b * 4 + r * 2 + c, 0], x[b, 0, 4 * r:4 * r + 4, 4 * c:4 * c + 4])


def test_context_is_centred_on_the_patch_and_wraps(one_thread):
    H = W = 64
    f = coordinate_field(H, W)
    p = MultiGridPatching(2).patch(f)  # 16 patches of 16 × 16, channels [fine, level 1, level 2]
    I, J = torch.meshgrid(torch.arange(16, dtype=f.dtype), torch.arange(16, dtype=f.dtype), indexing="ij")
    # interior patch (row 1, col 2): rows 16..31, cols 32..47, centre (24, 40). At level 1 its window spans
    # 32 fine pixels round the centre, rows 8..39 and cols 24..55; coarse pixel (i, j) is the mean of fine
    # rows 8+2i, 9+2i and cols 24+2j, 25+2j.
    assert torch.equal(p[1 * 4 + 2, 1], W * (8.5 + 2 * I) + (24.5 + 2 * J))
    # wrapping patch (row 0, col 0): level-1 window starts at fine row/col -8, i.e. 56, and wraps to 0
    assert torch.equal(p[0, 1], W * ((-8 + 2 * I) % H + 0.5) + ((-8 + 2 * J) % W + 0.5))
    # level 2 covers the whole field: 64 fine pixels centred on (8, 8), from -24 = 40 on, blocks of 4
    assert torch.equal(p[0, 2], W * ((-24 + 4 * I) % H + 1.5) + ((-24 + 4 * J) % W + 1.5))


@pytest.mark.parametrize("shape,levels,padding", [((100, 64), 2, 0.125), ((37, 50), 2, 0.2)])
def test_context_matches_a_loop_reference_for_odd_patches_and_padding(one_thread, shape, levels, padding):
    H, W = shape
    f = coordinate_field(H, W)
    m = MultiGridPatching(levels, padding)
    h, w = -(-H // 4), -(-W // 4)
    ph, pw = int(padding * h + 0.5), int(padding * w + 0.5)  # round half up
    Sh, Sw = h + 2 * ph, w + 2 * pw
    p = m.patch(f)
    for r, c in [(1, 2), (0, 0), (3, 3)]:  # interior, wrapping at the top left, at the bottom right
        for level in range(levels + 1):
            k = 2 ** level
            # the window of Sh·k fine pixels centred on the patch centre r·h + h/2 (floored for odd sizes)
            top, left = r * h + (h - Sh * k) // 2, c * w + (w - Sw * k) // 2
            expected = reference_window(f[0, 0], top, left, Sh, Sw, k)
            assert torch.allclose(p[r * 4 + c, level], expected, rtol=0, atol=1e-9), (r, c, level)


@pytest.mark.parametrize("size", [64, 100])
def test_patched_pointwise_conv_equals_the_full_field_conv(one_thread, size):
    torch.manual_seed(0)
    C, C_out, levels = 2, 3, 2
    m = MultiGridPatching(levels, 0.125)
    net = torch.nn.Conv2d(m.in_channels(C), C_out, 1)
    with torch.no_grad():
        net.weight[:, C:] = 0  # a pointwise map of the fine channels only commutes with patching
    x = torch.randn(2, C, size, size)
    y = m.stitch(net(m.patch(x)), (size, size))
    expected = torch.nn.functional.conv2d(x, net.weight[:, :C], net.bias)
    assert y.shape == (2, C_out, size, size)
    assert torch.allclose(y, expected, atol=1e-6)
    y.sum().backward()  # trainable through patch and stitch
    assert net.weight.grad is not None


def test_levels_zero_is_the_identity(one_thread):
    m = MultiGridPatching(0, 0.25)
    x = torch.randn(2, 3, 17, 9)
    assert m.patch(x) is x and m.stitch(x, (17, 9)) is x
    assert m.patches_per_sample == 1 and m.in_channels(3) == 3
    net = torch.nn.Conv2d(3, 1, 3, padding=1)
    assert torch.equal(m.stitch(net(m.patch(x)), (17, 9)), net(x))


def test_bad_arguments_raise_clear_errors(one_thread):
    with pytest.raises(ValueError, match="levels must be an integer >= 0"):
        MultiGridPatching(-1)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\)"):
        MultiGridPatching(1, -0.1)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\)"):
        MultiGridPatching(1, 1.0)
    m = MultiGridPatching(3)
    with pytest.raises(ValueError, match=r"must be 4-D \(B, C, H, W\).*x\[None\]"):
        m.patch(torch.randn(16, 16))
    with pytest.raises(ValueError, match="too small for levels=3.*use levels <= 2"):
        m.patch(torch.randn(1, 1, 16, 4))
    with pytest.raises(ValueError, match="cannot stitch.*keep the patch size"):
        m.stitch(torch.randn(64, 1, 3, 3), (16, 16))
