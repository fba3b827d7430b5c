"""N-d Fourier layer (FNO spectral convolution) with length-consistent resampling.

The layer multiplies the lowest Fourier modes of its input by learned complex
matrices (one ``C_in x C_out`` matrix per kept mode) and transforms back, onto
the input grid or onto another number of points per axis. Written with plain
``torch.fft`` and real arithmetic on ``view_as_real`` spectra (one batched
matmul) so that ``torch.compile`` can generate code for everything but the FFTs.

Frequency conventions used throughout this module
-------------------------------------------------
* An axis of ``n`` points *holds* the signed frequency ``k`` iff ``|k| < n / 2``:
  ``(n + 1) // 2`` non-negative and ``(n - 1) // 2`` negative frequencies. The
  Nyquist bin of an even grid is never read or written, because it cannot be
  told apart from ``-n/2`` and so has no resolution-independent meaning.
* Coefficients use "forward" normalisation (``1/N`` on the forward FFT, none on
  the inverse), so a coefficient is the physical amplitude of its mode whatever
  the number of points on either side: resampling onto ``n_out`` points keeps
  amplitudes (Spectral-Refiner pitfall 4, the reference loses a factor
  ``n_in / n_out``), and the per-mode bias means the same on every grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["SpectralConv"]


def _held(n: int) -> tuple[int, int]:
    """Number of (non-negative, negative) frequencies an ``n``-point axis holds."""
    return (n + 1) // 2, (n - 1) // 2


def _fit(z: Tensor, dim: int, src: tuple[int, int], dst: tuple[int, int]) -> Tensor:
    """Crop or zero-pad a signed-frequency layout along ``dim``.

    ``z`` holds frequencies ``0 .. src[0]-1`` in its first ``src[0]`` entries and
    ``-src[1] .. -1`` in its last ``src[1]`` entries (entries in between are
    ignored). The result holds ``0 .. dst[0]-1`` then ``-dst[1] .. -1``, i.e. it
    has length ``dst[0] + dst[1]``; frequencies ``z`` lacks become zeros.
    With ``dst = (n - q, q)`` this scatters a block into a full ``n``-point FFT axis.
    """
    p, q = min(src[0], dst[0]), min(src[1], dst[1])
    parts = [z.narrow(dim, 0, p)]
    gap = dst[0] - p + dst[1] - q
    if gap > 0:
        shape = list(z.shape)
        shape[dim] = gap
        parts.append(z.new_zeros(shape))
    if q > 0:
        parts.append(z.narrow(dim, z.shape[dim] - q, q))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim)


def _mirror(z: Tensor, dims: Sequence[int]) -> Tensor:
    """Map the FFT index ``k`` to ``-k mod n`` along ``dims`` (flip, then roll by one)."""
    if len(dims) == 0:
        return z
    return torch.roll(torch.flip(z, dims), shifts=[1] * len(dims), dims=list(dims))


def _mode_matmul(x: Tensor, w: Tensor) -> Tensor:
    """Per-mode complex channel mixing on real views (trailing axis = re, im).

    ``(B, I, *M, 2), (I, O, *M, 2) -> (B, O, *M, 2)``, as one real batched
    matmul per mode: ``[x_re, x_im] @ [[w_re, w_im], [-w_im, w_re]]``. Real
    arithmetic because inductor generates no code for complex ops, and a
    mode-major contiguous bmm because CPU ``einsum`` on these layouts hits a
    strided slow path (hundreds of times slower at SFNO's default size).
    """
    b, i, o, modes = x.shape[0], x.shape[1], w.shape[1], x.shape[2:-1]
    xm = x.flatten(2, -2).permute(2, 0, 3, 1).reshape(-1, b, 2 * i)  # (M, B, 2I)
    wr, wi = w.flatten(2, -2).permute(2, 0, 1, 3).unbind(-1)  # (M, I, O) each
    wm = torch.cat([torch.cat([wr, wi], -1), torch.cat([-wi, wr], -1)], 1)  # (M, 2I, 2O)
    y = torch.bmm(xm, wm)  # (M, B, 2O): real parts, then imaginary parts
    return y.view(-1, b, 2, o).permute(1, 3, 0, 2).reshape(b, o, *modes, 2)


class SpectralConv(nn.Module):
    """Fourier layer on 1, 2 or 3 periodic axes with optional output resampling.

    Keeps the ``2^(d-1)`` corner blocks of the rFFT spectrum: frequencies
    ``0 .. m-1`` and ``-m .. -1`` on each non-last axis times ``0 .. m_d-1`` on
    the last (half-spectrum) axis, and applies

        ``y_hat[b, o, k] = sum_i x_hat[b, i, k] W[i, o, k] + delta * bias[k]``.

    The corner blocks are stored together in one tensor (one batched matmul
    instead of ``2^(d-1)``): along non-last axis ``a`` the weight has ``2 m_a`` entries,
    index ``j < m_a`` is frequency ``j`` and ``j >= m_a`` is ``j - 2 m_a``
    (``fftfreq`` order, the last entry is ``-1``).

    Modes that a grid does not hold (see the module docstring) are treated as
    zero: on a coarse input they are dropped from the input, on a coarse output
    they are dropped from the output. So ``modes`` may exceed what the grid holds;
    nothing is raised.

    Parameters
    ----------
    in_channels, out_channels : int
        Channel counts ``C_in``, ``C_out``.
    modes : tuple of int
        ``(m_1, ..., m_d)``, ``d`` in {1, 2, 3}; the transform acts on the last
        ``d`` axes of the input, ``m_d`` counts half-spectrum bins on the last axis.
    bias : bool
        Per-mode complex bias, one value per kept mode shared by all channels
        (acts like a source term). Initialised to zero.
    delta : float
        Fixed factor on the bias (Spectral-Refiner output layer: 0.1).
    init_scale : float, optional
        Real and imaginary parts of ``W`` are ``init_scale * U[0, 1)``; default
        ``0.5 / (C_in * C_out)`` as in the reference.

    Attributes
    ----------
    weight : Parameter, complex, (C_in, C_out, 2 m_1, ..., 2 m_{d-1}, m_d)
    bias : Parameter or None, complex, (2 m_1, ..., 2 m_{d-1}, m_d)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        modes: Sequence[int],
        bias: bool = False,
        delta: float = 1.0,
        init_scale: float | None = None,
    ) -> None:
        super().__init__()
        modes = tuple(int(m) for m in modes)
        if not 1 <= len(modes) <= 3 or min(modes) < 1:
            raise ValueError(f"modes must be 1 to 3 positive ints, got {modes}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.modes, self.dim, self.delta = modes, len(modes), float(delta)
        block = (*(2 * m for m in modes[:-1]), modes[-1])
        scale = 0.5 / (in_channels * out_channels) if init_scale is None else init_scale
        self.weight = nn.Parameter(
            scale * torch.rand(in_channels, out_channels, *block, dtype=torch.cfloat)
        )
        self.bias = nn.Parameter(torch.zeros(block, dtype=torch.cfloat)) if bias else None

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, modes={self.modes}, "
            f"bias={self.bias is not None}, delta={self.delta}"
        )

    def _apply(self, fn, recurse=True):
        # nn.Module casts (`.double()`, `.to(torch.float64)`) either skip complex
        # tensors or cast them to a real dtype, silently dropping the imaginary
        # part. Casting the real view instead maps cfloat <-> cdouble.
        def complex_safe(t: Tensor) -> Tensor:
            if not t.is_complex():
                return fn(t)
            r = fn(torch.view_as_real(t))
            if r.dtype in (torch.float16, torch.float32, torch.float64):
                return torch.view_as_complex(r.contiguous())
            return t.to(r.device)  # no complex counterpart (e.g. bfloat16): keep dtype

        return super()._apply(complex_safe, recurse)

    def forward(
        self, x: Tensor, out_sizes: int | Sequence[int | None] | None = None
    ) -> Tensor:
        """Apply the layer.

        Parameters
        ----------
        x : Tensor, real, (B, C_in, n_1, ..., n_d)
        out_sizes : int or sequence of (int or None), optional
            Output points per transformed axis; ``None`` entries keep the input
            size, a single int sets the last axis only (temporal resampling).
            Resampling evaluates the same trigonometric polynomial on the new
            grid, so mode amplitudes do not depend on the output length.

        Returns
        -------
        Tensor, real, (B, C_out, n_out_1, ..., n_out_d)
        """
        d = self.dim
        if x.dim() != d + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected input (B, {self.in_channels}, <{d} grid axes>), got {tuple(x.shape)}"
            )
        n_in = list(x.shape[2:])
        if out_sizes is None:
            out_sizes = [None] * d
        elif isinstance(out_sizes, int):
            out_sizes = [None] * (d - 1) + [out_sizes]
        if len(out_sizes) != d:
            raise ValueError(f"out_sizes needs {d} entries, got {out_sizes}")
        n_out = [n if s is None else int(s) for n, s in zip(n_in, out_sizes)]
        axes = list(range(2, d + 2))

        # complex spectra are handled as real views (..., 2) until the inverse FFT
        x_hat = torch.view_as_real(torch.fft.rfftn(x, dim=axes, norm="forward"))
        w = torch.view_as_real(self.weight)
        b = None if self.bias is None else torch.view_as_real(self.bias)
        kept = []
        for a, (m, ni, no) in enumerate(zip(self.modes, n_in, n_out)):
            hi, ho = _held(ni), _held(no)
            src = (m, m)
            if a == d - 1:  # half spectrum: non-negative frequencies only
                hi, ho, src = (hi[0], 0), (ho[0], 0), (m, 0)
            keep = (min(m, ho[0]), min(m, ho[1]))  # what the output grid can carry
            x_hat = _fit(x_hat, 2 + a, hi, keep)  # zeros where the input lacks modes
            w = _fit(w, 2 + a, src, keep)
            if b is not None:
                b = _fit(b, a, src, keep)
            kept.append(keep)

        y_hat = _mode_matmul(x_hat, w)  # (B, C_out, *kept block, 2)
        if b is not None:
            y_hat = y_hat + self.delta * b

        # scatter the kept block into the full output half-spectrum
        for a, ((p, q), no) in enumerate(zip(kept, n_out)):
            full = no // 2 + 1 if a == d - 1 else no
            y_hat = _fit(y_hat, 2 + a, (p, q), (full - q, q))

        # The last-axis k=0 plane must be Hermitian, y(-k) = conj(y(k)), for
        # irfftn to be well defined (its result otherwise is up to the FFT
        # backend); independent corner weights break this. Symmetrising keeps the
        # real part of the plane's contribution, as the slow reference does. The
        # last-axis Nyquist plane is never written (module docstring): no fix needed.
        plane = y_hat[..., :1, :]
        mirror = _mirror(plane, axes[:-1])
        re = plane[..., 0] + mirror[..., 0]
        im = plane[..., 1] - mirror[..., 1]  # conjugate of the mirror
        plane = 0.5 * torch.stack([re, im], -1)
        y_hat = torch.cat([plane, y_hat[..., 1:, :]], dim=-2)
        y_hat = torch.view_as_complex(y_hat.contiguous())
        return torch.fft.irfftn(y_hat, s=n_out, dim=axes, norm="forward")
