"""Multi-grid tensorized FNO (MG-TFNO, Kossaifi et al., arXiv 2310.00120).

A TFNO (each spectral weight a Tucker/CP/TT tensor, :class:`~neuropde.models.fno.FNO` with a
``factorization``) applied to multi-grid patches (:class:`~neuropde.nn.patching.MultiGridPatching`):
the field is cut into 4^L patches that go through the network as one batch, each with L coarser,
wider views of its surroundings as extra channels, and the outputs are stitched back. With
``levels=0`` this is a plain TFNO on the full field; with ``factorization="dense"`` an FNO.
Inference on a full field is one call of :meth:`MGTFNO.forward`.
"""
from __future__ import annotations

import torch
from torch import nn

from neuropde.models.fno import FNO
from neuropde.nn.patching import MultiGridPatching


class MGTFNO(nn.Module):
    """Patched (T)FNO over frames-as-channels: (B, t_in, H, W) -> (B, t_out, H, W).

    Parameters
    ----------
    t_in, t_out : input / output frames (channels).
    modes, width, n_layers, positional_embedding : of the inner FNO (modes apply to a patch).
    factorization, rank, implementation : of the spectral weights (see :class:`FNO`).
    joint : all layers' spectral weights as one factorised tensor (the paper's joint factorisation);
        ``rank`` is then the fraction of all layers' dense spectral parameters kept.
    levels : L, multi-grid levels (4^L patches per sample; 0 = no patching).
    padding : context padding of each patch, as a fraction of the patch size.
    patch_chunk : patches per network call (0 = all of a batch in one call). With a chunk, training
        recomputes each chunk's activations in the backward pass (activation checkpointing), so
        the memory of a training step is about that of one chunk: fields too large for one call
        still train, at the cost of a second forward pass.
    """

    def __init__(self, t_in: int, t_out: int, modes: tuple[int, int] = (12, 12), width: int = 32,
                 n_layers: int = 4, factorization: str = "tucker", rank: float = 0.1,
                 implementation: str = "factorized", levels: int = 1, padding: float = 0.125,
                 positional_embedding: str | None = "grid", patch_chunk: int = 0, joint: bool = False):
        super().__init__()
        self.t_in, self.t_out = int(t_in), int(t_out)
        self.patching = MultiGridPatching(int(levels), float(padding))
        if patch_chunk < 0:
            raise ValueError(f"patch_chunk must be >= 0 (0 = all patches in one call), got {patch_chunk}")
        self.patch_chunk = int(patch_chunk)
        self.net = FNO(self.patching.in_channels(self.t_in), self.t_out, modes=modes, width=width,
                       n_layers=n_layers, positional_embedding=positional_embedding,
                       factorization=factorization, rank=rank, implementation=implementation, joint=joint)

    def patch_shape(self, H: int, W: int) -> tuple[int, int, int]:
        """(channels, height, width) of one patch of an H × W field: the input of one network call."""
        probe = self.patching.patch(torch.zeros(1, self.t_in, H, W))
        return tuple(probe.shape[1:])

    def forward(self, x: torch.Tensor, t_out: int | None = None) -> torch.Tensor:
        """x: (B, t_in, H, W) -> (B, t_out, H, W)."""
        if x.dim() != 4 or x.shape[1] != self.t_in:
            raise ValueError(f"MG-TFNO takes (B, {self.t_in}, H, W) fields, got {tuple(x.shape)}; "
                             f"set data.window.t_in={self.t_in}")
        if t_out not in (None, self.t_out):
            raise ValueError(f"this MG-TFNO predicts exactly {self.t_out} frames (got t_out={t_out})")
        return self.patching.stitch(self._run(self.patching.patch(x)), x.shape[-2:])

    def _run(self, patches: torch.Tensor) -> torch.Tensor:
        """The network on (N, C·(L+1), h', w') patches, ``patch_chunk`` at a time."""
        if not self.patch_chunk or patches.shape[0] <= self.patch_chunk:
            return self.net(patches)
        chunks = patches.split(self.patch_chunk)
        if torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            return torch.cat([checkpoint(self.net, c, use_reentrant=False) for c in chunks])
        return torch.cat([self.net(c) for c in chunks])
