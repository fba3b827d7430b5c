"""neuraloperator's FNO (Li et al., arXiv 2010.08895) as the baseline operator on trajectory windows.

The T_in input frames are the input channels and the T_out output frames the output channels of
a 2D FNO. Two known problems of neuraloperator 2.0 are handled here: its SpectralConv gives wrong
results on odd grid sizes (an odd axis is Fourier-refined by 2 and the output subsampled back), and
its ``state_dict`` carries a ``_metadata`` dict with Python callables (stripped by the task, so
checkpoints load with ``weights_only=True``).

Non-periodic data (Darcy) is zero-padded on the high side of each axis before the Fourier layers, as
in the original FNO Darcy code (85 -> 94): the spectral convolutions then see a periodic extension
whose wrap-around does not couple opposite boundaries. The pad is rounded up so that the padded grid
is even, which also keeps odd grids away from the odd-size problem. neuraloperator's own
``domain_padding`` rounds to nearest and can land on an odd size (85 * 0.1 -> 93), hence our own.

``backend="neuropde"`` runs the same architecture as :class:`neuropde.nn.FourierNet` (same
parameters, same function: a test carries neuraloperator's weights across), whose spectral layers
are real matmuls that compile into one graph; it is correct on odd grids as it is.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from neuralop.models import FNO as _NeuralopFNO
from torch import nn

from neuropde.nn.fourier_net import FourierNet
from neuropde.pde.spectral import fourier_resample


class FNO(nn.Module):
    """FNO over frames-as-channels, in 1, 2 or 3 spatial dimensions (``len(modes)``).

    Parameters
    ----------
    t_in, t_out : input / output frames (channels).
    modes : Fourier modes kept per spatial axis.
    width : hidden channels; ``n_layers`` : Fourier layers.
    factorization : ``dense`` (default) or ``tucker`` / ``cp`` / ``tt``: each spectral weight as a
        low-rank tensor (TFNO, through neuraloperator and tensorly) keeping ``rank`` × the dense
        parameter count; ``implementation="factorized"`` contracts the input with the factors
        directly, ``"reconstructed"`` rebuilds the dense weight first (same result).
    joint : with a factorization, all layers' spectral weights are ONE low-rank tensor
        (n_layers, width, width, *modes) whose factors the layers share (MG-TFNO's joint
        factorisation, :class:`~neuropde.nn.joint_factorization.JointSpectralWeight`); ``rank`` is
        then the fraction of all layers' dense parameters kept.
    pad_fraction : 0 for periodic data; otherwise each axis of n points is zero-padded (high side) by
        ceil(pad_fraction * n) points, plus one if that leaves it odd, and cropped after the network.
        One value for every axis, or one per axis (0 on the periodic ones).
    backend : ``neuralop`` (neuraloperator's FNO, the baseline) or ``neuropde`` (the same network
        on neuropde's SpectralConv, faster; dense weights only).
    """

    def __init__(self, t_in: int, t_out: int, modes: tuple[int, int] = (12, 12), width: int = 20,
                 n_layers: int = 4, positional_embedding: str | None = "grid",
                 factorization: str | None = None, rank: float = 1.0, implementation: str = "factorized",
                 pad_fraction: float = 0.0, backend: str = "neuralop", joint: bool = False):
        super().__init__()
        if backend not in ("neuralop", "neuropde"):
            raise ValueError(f"backend must be neuralop or neuropde, got {backend!r}")
        fractions = list(pad_fraction) if isinstance(pad_fraction, (list, tuple)) else [pad_fraction] * len(modes)
        if len(fractions) != len(modes) or not all(0.0 <= float(f) <= 1.0 for f in fractions):
            raise ValueError(f"pad_fraction must be in [0, 1], one value or one per axis ({len(modes)}), "
                             f"got {pad_fraction}")
        # per axis: > 0 on non-periodic axes (a Darcy box, a Well set with walls in y), 0 on periodic ones
        self.pad_fractions = [float(f) for f in fractions]
        self.t_in, self.t_out = int(t_in), int(t_out)
        factorization = None if factorization in (None, "dense") else factorization
        if factorization not in (None, "tucker", "cp", "tt"):
            raise ValueError(f"factorization must be dense, tucker, cp or tt, got {factorization!r}")
        if implementation not in ("factorized", "reconstructed"):
            raise ValueError(f"implementation must be factorized or reconstructed, got {implementation!r}")
        if joint and factorization is None:
            raise ValueError("joint=true shares one factorised tensor between the layers; "
                             "set factorization to tucker, cp or tt (dense weights have nothing to share)")
        self.dim, self.backend = len(modes), backend
        if backend == "neuropde":
            if factorization is not None:
                raise ValueError(f"backend=neuropde has dense spectral weights only; use backend=neuralop "
                                 f"for factorization={factorization}")
            if positional_embedding not in (None, "grid"):
                raise ValueError(f"backend=neuropde takes positional_embedding grid or null, "
                                 f"got {positional_embedding!r}")
            self.fno = FourierNet(self.t_in, self.t_out, tuple(modes), int(width), int(n_layers),
                                  positional_embedding=positional_embedding == "grid")
            return
        self.fno = _NeuralopFNO(n_modes=tuple(modes), in_channels=self.t_in, out_channels=self.t_out,
                                hidden_channels=int(width), n_layers=int(n_layers),
                                positional_embedding=positional_embedding, factorization=factorization,
                                rank=float(rank), implementation=implementation)
        if joint:
            from neuropde.nn.joint_factorization import JointSpectralWeight

            self.joint = JointSpectralWeight(self.fno.fno_blocks.convs, factorization, float(rank), implementation)

    def forward(self, x: torch.Tensor, t_out: int | None = None) -> torch.Tensor:
        """x: (B, t_in, *space) -> (B, t_out, *space), one spatial axis per entry of ``modes``."""
        if x.shape[1] != self.t_in:
            raise ValueError(f"this FNO takes {self.t_in} input frames, got {x.shape[1]}; "
                             f"set data.window.t_in={self.t_in}")
        if t_out not in (None, self.t_out):
            raise ValueError(f"this FNO predicts exactly {self.t_out} frames (got t_out={t_out}); "
                             "use model=sfno for trajectories of any length")
        if x.dim() != 2 + self.dim:
            raise ValueError(f"this FNO has {self.dim} spatial axes (len(modes)), got input of shape "
                             f"{tuple(x.shape)}; give as many modes as the data has spatial axes")
        space = x.shape[2:]
        if any(self.pad_fractions):
            padding = [self.padding(n, axis) for axis, n in enumerate(space)]
            padded = F.pad(x, [p for q in reversed(padding) for p in (0, q)])  # F.pad: last axis first
            return self._run(padded)[(..., *(slice(0, n) for n in space))]
        return self._run(x)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """The network on x; an odd axis (periodic: padded ones are made even) is, for neuraloperator,
        Fourier-refined by 2 (exact interpolation of the input) and every other point kept, so that
        its SpectralConv never sees an odd size and pointwise layers see the original points."""
        space = x.shape[2:]
        if self.backend == "neuralop" and any(n % 2 for n in space):
            factors = [1 + n % 2 for n in space]
            fine = fourier_resample(x, tuple(f * n for f, n in zip(factors, space)))
            return self.fno(fine)[(..., *(slice(None, None, f) for f in factors))]
        return self.fno(x)

    @staticmethod
    def points_needed(modes) -> list[int]:
        """Grid points per axis that hold ``modes`` (neuraloperator counts the modes of both signs)."""
        return [int(m) for m in modes]

    def padding(self, n: int, axis: int = 0) -> int:
        """Points added after ``axis`` of n points: ceil(its pad fraction * n), made even in total;
        none on a periodic axis (fraction 0), whose wrap-around is the data's own."""
        fraction = self.pad_fractions[axis]
        if fraction == 0:
            return 0
        pad = math.ceil(fraction * n)
        return pad + (n + pad) % 2
