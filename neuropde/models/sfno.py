"""Spatiotemporal Fourier Neural Operator (SFNO) of Spectral-Refiner, arXiv 2405.17211.

SFNO maps a short trajectory of a scalar field on a flat periodic 2-D domain to a
future trajectory of any requested length, with FFTs over (x, y, t) in every layer
and an output operator that resamples a latent time axis onto the requested number
of frames. Spectral-Refiner later fine-tunes only that (linear) output operator per
trajectory; hence ``features`` / ``output_operator`` are exposed separately.

Not neuraloperator's Spherical FNO. Tensors are (batch, time, x, y) at the public
interface; inside, the layout is (batch, channel, x, y, time) so that time is the
half-spectrum (last) axis of the rFFT.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuropde.nn.pointwise import PointwiseConv3d
from neuropde.nn.spectral import SpectralConv

__all__ = ["SFNO", "LiftingOperator", "OutputOperator", "spacetime_encoding"]

_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh}


def _activation(name: str) -> nn.Module:
    try:
        return _ACTIVATIONS[name.lower()]()
    except KeyError:
        choices = sorted(_ACTIVATIONS)
        raise ValueError(f"activation must be one of {choices}, got {name!r}") from None


def _ffn(width: int, expansion: int, activation: str) -> nn.Sequential:
    """Pointwise two-layer MLP C -> expansion*C -> C as 1x1x1 convolutions."""
    return nn.Sequential(
        PointwiseConv3d(width, expansion * width),
        _activation(activation),
        PointwiseConv3d(expansion * width, width),
    )


def spacetime_encoding(
    n_x: int,
    n_y: int,
    n_t: int,
    channels: int,
    beta: float,
    max_t: int,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Fixed space-time encoding added to the input before lifting.

    Channels: x, y, t, then ``e^{beta t} sin(pi k t)`` for odd k and
    ``e^{beta t} cos(pi k t)`` for even k, k = 1 .. channels - 3, with
    ``t_j = j / max_t`` (j = 1 .. n_t) as in the reference. x and y are the
    periodic cell coordinates ``i / n`` rather than the reference's
    ``linspace(0, 1, n)``: these take the same value at a point whatever the
    resolution, which keeps zero-shot super-resolution consistent.

    Returns
    -------
    Tensor, (1, channels, n_x, n_y, n_t)
    """
    kw = dict(device=device, dtype=dtype)
    x = torch.arange(n_x, **kw) / n_x
    y = torch.arange(n_y, **kw) / n_y
    t = torch.arange(1, n_t + 1, **kw) / max_t
    k = torch.arange(1, channels - 2, **kw)[:, None]  # (channels - 3, 1)
    wave = torch.where(k % 2 == 1, torch.sin(torch.pi * k * t), torch.cos(torch.pi * k * t))
    temporal = torch.cat([t[None], torch.exp(beta * t) * wave])  # (channels - 2, n_t)
    shape = (n_x, n_y, n_t)
    pe = torch.cat(
        [
            x[None, :, None, None].expand(1, *shape),
            y[None, None, :, None].expand(1, *shape),
            temporal[:, None, None, :].expand(channels - 2, *shape),
        ]
    )
    return pe[None]


class LiftingOperator(nn.Module):
    """Input (B, 1, X, Y, T_in) -> latent (B, C, X, Y, T_lat).

    encoding -> GroupNorm(1 group) -> 1x1 conv -> v;
    ``act(v[..., -1] + FFN(SpectralConv(v) resampled onto T_lat points))``.
    The GroupNorm replaces a data-set normaliser, so any T_in works.
    """

    def __init__(
        self,
        width: int,
        modes: tuple[int, int, int],
        t_latent: int,
        beta: float,
        activation: str,
        max_t_in: int,
        expansion: int = 4,
    ) -> None:
        super().__init__()
        self.width, self.t_latent = width, t_latent
        self.beta, self.max_t_in = beta, max_t_in
        self.norm = nn.GroupNorm(1, width, eps=1e-7)
        self.proj = PointwiseConv3d(width, width)
        self.sconv = SpectralConv(width, width, modes)
        self.ffn = _ffn(width, expansion, activation)
        self.act = _activation(activation)

    def forward(self, v: Tensor) -> Tensor:
        _, _, n_x, n_y, n_t = v.shape
        if not 1 <= n_t <= self.max_t_in:
            raise ValueError(f"SFNO takes 1 to max_t_in={self.max_t_in} input frames, got {n_t}")
        pe = spacetime_encoding(
            n_x, n_y, n_t, self.width, self.beta, self.max_t_in, v.device, v.dtype
        )
        v = self.proj(self.norm(v + pe))  # (B, C, X, Y, T_in)
        w = self.ffn(self.sconv(v, out_sizes=self.t_latent))  # (B, C, X, Y, T_lat)
        return self.act(v[..., -1:] + w)


class OutputOperator(nn.Module):
    """Reduction output (B, 1, X, Y, T_lat) and last frame -> (B, t_out, X, Y).

    The last input frame is prepended in time, the sequence (length L = T_lat + 1)
    is zero-padded in front to 2L points to soften the periodic wrap-around, a
    1 -> 1 spectral convolution with per-mode bias resamples it onto
    ``t_out + L + 1`` points (length-consistent), the last ``t_out`` are kept and
    the last frame is added back. Linear in its parameters given its inputs, which
    is what makes Spectral-Refiner's fine-tuning convex.
    """

    def __init__(self, modes: tuple[int, int, int], delta: float = 0.1) -> None:
        super().__init__()
        self.sconv = SpectralConv(1, 1, modes, bias=True, delta=delta)

    def forward(self, r: Tensor, last_frame: Tensor, t_out: int) -> Tensor:
        """
        Parameters
        ----------
        r : Tensor, (B, 1, X, Y, T_lat)
        last_frame : Tensor, (B, X, Y)
        t_out : int, >= 1

        Returns
        -------
        Tensor, (B, t_out, X, Y)
        """
        if int(t_out) < 1:
            raise ValueError(f"t_out must be >= 1, got {t_out}")
        t_out = int(t_out)
        last = last_frame[:, None, :, :, None]  # (B, 1, X, Y, 1)
        s = torch.cat([last, r], dim=-1)  # (B, 1, X, Y, L)
        n = s.shape[-1]
        s = F.pad(s, (n, 0))
        y = self.sconv(s, out_sizes=t_out + n + 1)[..., -t_out:]
        return (last + y)[:, 0].permute(0, 3, 1, 2)


class SFNO(nn.Module):
    """Spatiotemporal FNO: (B, T_in, X, Y) -> (B, t_out, X, Y) for any X, Y, T_in, t_out.

    Parameters
    ----------
    modes : (m_x, m_y, m_t)
        Kept Fourier modes per axis (corner blocks in x, y; first m_t in time).
    width : int
        Latent channels C; even and > 3 (the encoding fills C channels).
    n_layers : int
        Spectral layers, counting the one inside the lifting operator (reference
        ``num_spectral_layers``); the body has ``n_layers - 1`` blocks.
    t_latent : int
        Number of latent time points T_lat.
    beta : float
        "A-priori energy decay" rate in the temporal encoding ``e^{beta t}``.
    activation : str
        "gelu", "relu", "silu" or "tanh".
    max_t_in : int
        Encoding time scale (``t_j = j / max_t_in``) and largest accepted T_in.
    delta : float
        Scale of the output layer's spectral bias.
    expansion : int
        Hidden width factor of the pointwise FFNs.
    """

    @staticmethod
    def points_needed(modes) -> list[int]:
        """Grid points per spatial axis that hold ``modes`` (m_x, m_y, m_t): m modes per corner, of
        both signs, take 2m points."""
        return [2 * int(m) for m in list(modes)[:2]]

    def __init__(
        self,
        modes: tuple[int, int, int] = (12, 12, 5),
        width: int = 20,
        n_layers: int = 4,
        t_latent: int = 10,
        beta: float = 0.01,
        activation: str = "gelu",
        max_t_in: int = 100,
        delta: float = 0.1,
        expansion: int = 4,
    ) -> None:
        super().__init__()
        modes = tuple(int(m) for m in modes)
        if len(modes) != 3:
            raise ValueError(f"modes must be (m_x, m_y, m_t), got {modes}")
        if width % 2 or width <= 3:
            raise ValueError(f"width must be even and > 3, got {width}")
        if n_layers < 1 or t_latent < 1:
            raise ValueError("n_layers and t_latent must be >= 1")
        self.modes, self.width, self.t_latent = modes, width, t_latent
        self.lifting = LiftingOperator(
            width, modes, t_latent, beta, activation, max_t_in, expansion
        )
        n_body = n_layers - 1
        self.spectral = nn.ModuleList(SpectralConv(width, width, modes) for _ in range(n_body))
        self.ffn = nn.ModuleList(_ffn(width, expansion, activation) for _ in range(n_body))
        self.skip = nn.ModuleList(PointwiseConv3d(width, width) for _ in range(n_body))
        self.act = _activation(activation)
        self.reduction = PointwiseConv3d(width, 1)
        self.output_operator = OutputOperator(modes, delta)

    def features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Everything before the output operator.

        Parameters
        ----------
        x : Tensor, (B, T_in, X, Y)

        Returns
        -------
        r : Tensor, (B, 1, X, Y, T_lat)
            Reduction output (internal layout, time last).
        last_frame : Tensor, (B, X, Y)
        """
        v = self.lifting(x.permute(0, 2, 3, 1)[:, None])  # (B, C, X, Y, T_lat)
        for sconv, ffn, skip in zip(self.spectral, self.ffn, self.skip):
            v = self.act(ffn(sconv(v)) + skip(v))
        return self.reduction(v), x[:, -1]

    def forward(self, x: Tensor, t_out: int) -> Tensor:
        """
        Parameters
        ----------
        x : Tensor, (B, T_in, X, Y)
        t_out : int
            Number of predicted frames (>= 1).

        Returns
        -------
        Tensor, (B, t_out, X, Y)
        """
        return self.output_operator(*self.features(x), t_out)
