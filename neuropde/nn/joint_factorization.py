"""Joint factorisation of all layers' spectral weights in one tensor (MG-TFNO, arXiv 2310.00120).

The paper's TFNO can write the spectral weights of all L Fourier layers as ONE low-rank tensor of
shape (L, C_in, C_out, *modes) instead of L separate ones: with Tucker, the channel and mode
factors are shared by every layer and a layer is the core contracted with one row of the layer
factor. neuraloperator 2.x dropped this option (reference notes mg-tfno.md, pitfall 8), so it is
rebuilt here on top of neuraloperator's ``SpectralConv``: each layer's ``weight`` becomes a view
that slices the shared tensor, and neuraloperator's contraction (factorised or reconstructed) runs
on that slice unchanged. The paper's tensor also stacks the 2^(d-1) frequency-corner blocks of each
layer on the first mode; neuraloperator 2.x keeps one fft-shifted block per layer, so here the first
mode is the layer alone.

``rank`` keeps its per-layer meaning, a fraction of the dense parameter count, here of all layers
together; for Tucker the layer mode keeps full rank (as in the paper). At one rank fraction the
joint tensor therefore has about the parameters of L per-layer ones (within rank rounding), with
larger ranks on the shared modes, because the factors are stored once instead of L times.
"""
from __future__ import annotations

import torch
from torch import nn

JOINT_FACTORIZATIONS = ("tucker", "cp", "tt")


class _LayerSlice:
    """Stands in for ``SpectralConv.weight`` of layer ``index``: indexing it, as the conv's forward
    does, indexes the joint tensor at that layer. A plain object, not a module, so the shared tensor
    is registered (and saved) once, by :class:`JointSpectralWeight`."""

    def __init__(self, joint: nn.Module, index: int):
        self.joint, self.index = joint, index

    @property
    def shape(self) -> torch.Size:
        return torch.Size(self.joint.shape[1:])

    def __getitem__(self, slices):
        slices = slices if isinstance(slices, tuple) else (slices,)
        return self.joint[(self.index, *slices)]

    def to_tensor(self) -> torch.Tensor:
        return self.joint[self.index].to_tensor()


class JointSpectralWeight(nn.Module):
    """One factorised complex tensor (L, C_in, C_out, *modes) holding the weights of ``convs``.

    Parameters
    ----------
    convs : neuraloperator ``SpectralConv`` layers (non-separable, all with one weight shape); their
        own weights are removed and replaced by views of the joint tensor, in place.
    factorization : ``tucker`` (the paper's), ``cp`` or ``tt``.
    rank : fraction of the dense parameter count of all layers together that is kept.
    implementation : ``factorized`` (contract the input with the layer's factors) or
        ``reconstructed`` (rebuild the layer's dense weight first); same result.
    """

    def __init__(self, convs: nn.ModuleList, factorization: str = "tucker", rank: float = 0.1,
                 implementation: str = "factorized"):
        super().__init__()
        from neuralop.layers.spectral_convolution import get_contract_fun
        from tltorch.factorized_tensors.core import FactorizedTensor

        if factorization not in JOINT_FACTORIZATIONS:
            raise ValueError(f"joint factorisation takes {', '.join(JOINT_FACTORIZATIONS)}, got {factorization!r}")
        shapes = {tuple(c.weight.shape) for c in convs}
        if len(shapes) != 1 or any(c.separable for c in convs):
            raise ValueError(f"joint factorisation needs non-separable layers of one weight shape, got {shapes}")
        (shape,) = shapes
        self.n_layers = len(convs)
        self.weight = FactorizedTensor.new((self.n_layers, *shape), rank=float(rank), factorization=factorization,
                                           fixed_rank_modes=[0] if factorization == "tucker" else None,
                                           dtype=torch.cfloat)
        self.weight.normal_(0, (2 / (shape[0] + shape[1])) ** 0.5)  # neuraloperator's per-layer init
        for j, conv in enumerate(convs):
            del conv.weight  # the per-layer tensor: its parameters would otherwise still train and count
            conv.weight = _LayerSlice(self.weight, j)
            conv._contract = get_contract_fun(self.weight, implementation=implementation, separable=False)

    @property
    def rank(self):
        return self.weight.rank

    def extra_repr(self) -> str:
        return f"layers={self.n_layers}, shape={tuple(self.weight.shape)}, rank={self.weight.rank}"
