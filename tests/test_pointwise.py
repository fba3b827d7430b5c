"""The GEMM form of 1x1 layers equals torch's convolutions, values and gradients."""
import pytest
import torch
import torch.nn.functional as F

from neuropde.nn.pointwise import PointwiseConv3d, pointwise_gemm

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("space", [(9,), (6, 7), (4, 5, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_gemm_equals_a_1x1_convolution(space, bias):
    torch.manual_seed(0)
    x = torch.randn(3, 4, *space, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True) if bias else None
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[len(space)]
    expected = conv(x, w.view(5, 4, *[1] * len(space)), b)
    got = pointwise_gemm(x, w, b)
    assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-12)
    g = torch.randn_like(got)
    inputs = [x, w] + ([b] if bias else [])
    assert all(torch.allclose(a, c, atol=1e-12) for a, c in
               zip(torch.autograd.grad(got, inputs, g), torch.autograd.grad(expected, inputs, g)))


def test_pointwise_conv3d_is_a_drop_in_conv3d():
    torch.manual_seed(1)
    ours, ref = PointwiseConv3d(4, 6), torch.nn.Conv3d(4, 6, 1)
    assert set(ours.state_dict()) == set(ref.state_dict()) and ours.weight.shape == ref.weight.shape
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 4, 5, 6, 3)
    assert torch.allclose(ours(x), ref(x), atol=1e-6)
