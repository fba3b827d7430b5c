"""neuraloperator's FNO architecture (Li et al., arXiv 2010.08895) on neuropde's SpectralConv.

The same network as ``neuralop.models.FNO`` with its default options (grid positional embedding,
two-layer channel-MLP lifting and projection, Fourier blocks with a linear skip, a half-width
channel MLP with soft gating, GELU after every block but the last), so that the two can be timed
against each other and weights carried across (:meth:`FourierNet.from_neuralop`). What differs is
the arithmetic: the spectral layers use partial DFTs as real matmuls (``SpectralConv``), and the
1x1 layers are batched GEMMs (CPU) or 1x1 convolutions (CUDA) on channels-first tensors, so the
whole network is one graph for ``torch.compile`` and CUDA graphs, without complex tensors or
opt_einsum.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuropde.nn.pointwise import pointwise_gemm
from neuropde.nn.spectral import SpectralConv

__all__ = ["FourierNet", "convert_neuralop_state"]


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class _Pointwise(nn.Module):
    """1x1 layer on channels-first fields: (B, C_in, *space) -> (B, C_out, *space).

    ``kind``: ``gemm`` (:func:`~neuropde.nn.pointwise.pointwise_gemm`, the fast one on a CPU),
    ``conv`` (one kernel forward and one backward: fewer launches, which is what limits small
    workloads on a GPU) or ``auto`` (conv on CUDA, gemm elsewhere).
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True, kind: str = "auto") -> None:
        super().__init__()
        lin = nn.Linear(in_channels, out_channels, bias=bias)  # torch's default init, as Conv1d's
        self.weight, self.bias, self.kind = lin.weight, lin.bias, kind

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "conv" or (self.kind == "auto" and x.is_cuda):
            return _CONV[x.dim() - 2](x, self.weight.view(*self.weight.shape, *[1] * (x.dim() - 2)), self.bias)
        return pointwise_gemm(x, self.weight, self.bias)


class _ChannelMLP(nn.Module):
    """Two pointwise layers with GELU between: C_in -> hidden -> C_out."""

    def __init__(self, in_channels: int, hidden: int, out_channels: int, kind: str = "auto") -> None:
        super().__init__()
        self.fc1, self.fc2 = _Pointwise(in_channels, hidden, kind=kind), _Pointwise(hidden, out_channels, kind=kind)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class FourierNet(nn.Module):
    """FNO on 1, 2 or 3 periodic axes: (B, C_in, *space) -> (B, C_out, *space).

    Parameters
    ----------
    in_channels, out_channels : field channels in and out.
    modes : Fourier modes per axis in neuraloperator's convention: on every axis but the last,
        the number of signed frequencies kept (even: ``-m/2 .. m/2 - 1``); on the last
        (half-spectrum) axis ``m`` keeps frequencies ``0 .. m/2``.
    width : hidden channels; ``n_layers`` : Fourier blocks.
    lifting_ratio, projection_ratio : hidden width of lifting / projection MLPs over ``width``.
    mlp_expansion : hidden width of each block's channel MLP over ``width``.
    positional_embedding : append the grid coordinates ``i / n`` per axis to the input.
    transform : SpectralConv's ``transform`` ("auto", "fft" or "dft").
    pointwise : how the 1x1 layers run: "auto" (1x1 convolutions on CUDA, batched GEMMs
        elsewhere), "conv" or "gemm"; the same function and parameters either way.
    """

    def __init__(self, in_channels: int, out_channels: int, modes: Sequence[int] = (12, 12),
                 width: int = 20, n_layers: int = 4, lifting_ratio: float = 2.0,
                 projection_ratio: float = 2.0, mlp_expansion: float = 0.5,
                 positional_embedding: bool = True, transform: str = "auto", pointwise: str = "auto") -> None:
        super().__init__()
        modes = tuple(int(m) for m in modes)
        if not 1 <= len(modes) <= 3 or min(modes) < 1:
            raise ValueError(f"modes must be 1 to 3 positive ints, got {modes}")
        if any(m % 2 for m in modes[:-1]):
            raise ValueError(f"modes on all axes but the last must be even (-m/2 .. m/2 - 1), got {modes}")
        self.dim, self.n_layers, self.positional_embedding = len(modes), int(n_layers), bool(positional_embedding)
        self.modes = modes
        ours = (*(m // 2 for m in modes[:-1]), modes[-1] // 2 + 1)  # SpectralConv's convention
        c_in = in_channels + (self.dim if positional_embedding else 0)
        if pointwise not in ("auto", "conv", "gemm"):
            raise ValueError(f"pointwise must be auto, conv or gemm, got {pointwise!r}")
        self.lifting = _ChannelMLP(c_in, round(lifting_ratio * width), width, pointwise)
        self.convs = nn.ModuleList(SpectralConv(width, width, ours, transform=transform)
                                   for _ in range(n_layers))
        std = (2 / (2 * width)) ** 0.5  # neuraloperator's spectral init
        for conv in self.convs:
            with torch.no_grad():
                conv.weight.normal_(0, std)
        self.conv_bias = nn.Parameter(std * torch.randn(n_layers, width))
        self.skips = nn.ModuleList(_Pointwise(width, width, bias=False, kind=pointwise) for _ in range(n_layers))
        self.mlps = nn.ModuleList(_ChannelMLP(width, round(mlp_expansion * width), width, pointwise)
                                  for _ in range(n_layers))
        self.gates = nn.Parameter(torch.ones(n_layers, width))
        self.projection = _ChannelMLP(width, round(projection_ratio * width), out_channels, pointwise)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C_in, *space) -> (B, C_out, *space), ``len(space) == len(modes)``."""
        if x.dim() != 2 + self.dim:
            raise ValueError(f"FourierNet has {self.dim} spatial axes, got input {tuple(x.shape)}")
        space = x.shape[2:]
        if self.positional_embedding:
            axes = [torch.arange(n, device=x.device, dtype=x.dtype) / n for n in space]
            grid = torch.stack(torch.meshgrid(*axes, indexing="ij"))  # (d, *space)
            x = torch.cat([x, grid.expand(x.shape[0], *grid.shape)], 1)
        h = self.lifting(x)
        ones = [1] * self.dim
        for i in range(self.n_layers):
            last = i == self.n_layers - 1
            z = self.convs[i](h) + self.conv_bias[i].view(-1, *ones) + self.skips[i](h)
            if not last:
                z = F.gelu(z)
            z = self.mlps[i](z) + self.gates[i].view(-1, *ones) * h
            h = z if last else F.gelu(z)
        return self.projection(h)

    @classmethod
    def from_neuralop(cls, fno: nn.Module, transform: str = "auto", pointwise: str = "auto") -> FourierNet:
        """The same function as a ``neuralop.models.FNO`` built with default block options.

        Raises ValueError for options this class does not reproduce (factorized weights,
        normalisation, other skips, preactivation, domain padding).
        """
        blocks = fno.fno_blocks
        conv0 = blocks.convs[0]
        unsupported = {
            "factorized spectral weights": type(conv0.weight).__name__ != "DenseTensor",
            "norm": blocks.norm is not None, "preactivation": blocks.preactivation,
            "channel-MLP skip other than soft-gating": type(blocks.channel_mlp_skips[0]).__name__ != "SoftGating",
            "domain padding": getattr(fno, "domain_padding", None) is not None,
            "complex data": blocks.complex_data,
        }
        bad = [k for k, v in unsupported.items() if v]
        if bad:
            raise ValueError(f"FourierNet cannot reproduce this FNO: {', '.join(bad)}")
        width, modes = fno.hidden_channels, tuple(conv0.n_modes)
        modes = (*modes[:-1], 2 * (modes[-1] - 1))  # neuralop stores the last axis as m/2 + 1
        net = cls(fno.in_channels, fno.out_channels, modes, width, fno.n_layers,
                  lifting_ratio=fno.lifting.fcs[0].out_channels / width,
                  projection_ratio=fno.projection.fcs[0].out_channels / width,
                  mlp_expansion=blocks.channel_mlp[0].fcs[0].out_channels / width,
                  positional_embedding=fno.positional_embedding is not None, transform=transform,
                  pointwise=pointwise)
        state = {k: v for k, v in fno.state_dict().items() if isinstance(v, Tensor)}  # not _metadata
        net.load_state_dict(convert_neuralop_state(state))  # strict: every entry must map
        return net


_RENAMES = [  # neuraloperator FNO entry -> FourierNet entry (the 1x1 kernels lose their last axis)
    (r"fno_blocks\.fno_skips\.(\d+)\.conv\.weight", r"skips.\1.weight"),
    (r"fno_blocks\.channel_mlp\.(\d+)\.fcs\.0\.(weight|bias)", r"mlps.\1.fc1.\2"),
    (r"fno_blocks\.channel_mlp\.(\d+)\.fcs\.1\.(weight|bias)", r"mlps.\1.fc2.\2"),
    (r"(lifting|projection)\.fcs\.0\.(weight|bias)", r"\1.fc1.\2"),
    (r"(lifting|projection)\.fcs\.1\.(weight|bias)", r"\1.fc2.\2"),
]


def convert_neuralop_state(state: Mapping[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
    """A neuraloperator FNO's state_dict entries under ``prefix`` as :class:`FourierNet`'s.

    Spectral weights are rolled from neuraloperator's centred mode order to the signed one
    (``fftfreq`` order) on every axis but the last; per-layer spectral biases and soft gates are
    stacked. Entries outside ``prefix`` are returned unchanged.
    """
    out: dict[str, Tensor] = {}
    conv_bias: dict[int, Tensor] = {}
    gates: dict[int, Tensor] = {}
    for key, value in state.items():
        name = key[len(prefix):] if key.startswith(prefix) else None
        if name is None:
            out[key] = value
        elif m := re.fullmatch(r"fno_blocks\.convs\.(\d+)\.weight\.tensor", name):
            axes = list(range(2, value.dim() - 1))  # centred: index j is frequency j - m/2
            shifts = [value.shape[a] // 2 for a in axes]
            out[f"{prefix}convs.{m[1]}.weight"] = torch.roll(value, shifts, axes) if axes else value
        elif m := re.fullmatch(r"fno_blocks\.convs\.(\d+)\.bias", name):
            conv_bias[int(m[1])] = value.flatten()
        elif m := re.fullmatch(r"fno_blocks\.channel_mlp_skips\.(\d+)\.weight", name):
            gates[int(m[1])] = value.flatten()
        else:
            for pattern, target in _RENAMES:
                if re.fullmatch(pattern, name):
                    new = re.sub(pattern, target, name)
                    out[prefix + new] = value[..., 0] if new.endswith("weight") else value
                    break
            else:
                out[key] = value  # not an FNO entry FourierNet knows: left for the caller to judge
    if conv_bias:
        out[prefix + "conv_bias"] = torch.stack([conv_bias[i] for i in sorted(conv_bias)])
    if gates:
        out[prefix + "gates"] = torch.stack([gates[i] for i in sorted(gates)])
    return out
