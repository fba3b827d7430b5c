"""neuraloperator's FNO (Li et al., arXiv 2010.08895) as the baseline operator on trajectory windows.

The T_in input frames are the input channels and the T_out output frames the output channels of
a 2D FNO. Two known problems of neuraloperator 2.0 are handled here: its SpectralConv gives wrong
results on odd grid sizes (an odd axis is Fourier-refined by 2 and the output subsampled back), and
its ``state_dict`` carries a ``_metadata`` dict with Python callables (stripped by the task, so
checkpoints load with ``weights_only=True``).
"""
from __future__ import annotations

import torch
from neuralop.models import FNO as _NeuralopFNO
from torch import nn


class FNO(nn.Module):
    """2D FNO over frames-as-channels.

    Parameters
    ----------
    t_in, t_out : input / output frames (channels).
    modes : Fourier modes kept per spatial axis.
    width : hidden channels; ``n_layers`` : Fourier layers.
    factorization : ``dense`` (default) or ``tucker`` / ``cp`` / ``tt``: each spectral weight as a
        low-rank tensor (TFNO, through neuraloperator and tensorly) keeping ``rank`` × the dense
        parameter count; ``implementation="factorized"`` contracts the input with the factors
        directly, ``"reconstructed"`` rebuilds the dense weight first (same result).
    """

    def __init__(self, t_in: int, t_out: int, modes: tuple[int, int] = (12, 12), width: int = 20,
                 n_layers: int = 4, positional_embedding: str | None = "grid",
                 factorization: str | None = None, rank: float = 1.0, implementation: str = "factorized"):
        super().__init__()
        self.t_in, self.t_out = int(t_in), int(t_out)
        factorization = None if factorization in (None, "dense") else factorization
        if factorization not in (None, "tucker", "cp", "tt"):
            raise ValueError(f"factorization must be dense, tucker, cp or tt, got {factorization!r}")
        if implementation not in ("factorized", "reconstructed"):
            raise ValueError(f"implementation must be factorized or reconstructed, got {implementation!r}")
        self.fno = _NeuralopFNO(n_modes=tuple(modes), in_channels=self.t_in, out_channels=self.t_out,
                                hidden_channels=int(width), n_layers=int(n_layers),
                                positional_embedding=positional_embedding, factorization=factorization,
                                rank=float(rank), implementation=implementation)

    def forward(self, x: torch.Tensor, t_out: int | None = None) -> torch.Tensor:
        """x: (B, t_in, X, Y) -> (B, t_out, X, Y)."""
        if x.shape[1] != self.t_in:
            raise ValueError(f"this FNO takes {self.t_in} input frames, got {x.shape[1]}; "
                             f"set data.window.t_in={self.t_in}")
        if t_out not in (None, self.t_out):
            raise ValueError(f"this FNO predicts exactly {self.t_out} frames (got t_out={t_out}); "
                             "use model=sfno for trajectories of any length")
        X, Y = x.shape[-2:]
        if X % 2 or Y % 2:
            # Run on the grid refined by 2 on the odd axes (exact Fourier interpolation of the
            # input) and keep every other point: pointwise layers then see the original points.
            fx, fy = 1 + X % 2, 1 + Y % 2
            return self.fno(resample(x, (fx * X, fy * Y)))[..., ::fx, ::fy]
        return self.fno(x)


def resample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Fourier resampling of periodic fields (..., X, Y) -> (..., *size), one axis at a time.

    Keeps the frequencies |k| < min(n, n_new)/2 that both grids hold symmetrically (an even grid's
    Nyquist mode is dropped), so it is exact for fields band-limited below both Nyquist limits.
    """
    for axis, n_new in zip((-2, -1), size):
        n = x.shape[axis]
        if n == n_new:
            continue
        kmax = (min(n, n_new) - 1) // 2
        xh = torch.fft.fft(x, dim=axis)
        shape = list(xh.shape)
        shape[axis] = n_new
        out = xh.new_zeros(shape)
        lo = [slice(None)] * xh.dim()
        lo[axis] = slice(0, kmax + 1)
        out[tuple(lo)] = xh[tuple(lo)]
        if kmax:
            lo[axis] = slice(-kmax, None)
            out[tuple(lo)] = xh[tuple(lo)]
        x = torch.fft.ifft(out, dim=axis).real * (n_new / n)
    return x
