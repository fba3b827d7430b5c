"""DCDM network and its unsupervised loss (Kaneda et al., ICML 2023; shared/reference/dcdm.md).

The network ``f_θ`` maps a (normalised) residual on the grid to a search direction that should
approximate ``c · A⁻¹ r`` for some unknown scalar ``c``; :func:`~neuropde.solvers.dcdm.dcdm_solve`
uses it inside a conjugate-direction iteration. It is trained without solutions: the loss
(:func:`dcdm_loss`) measures how well the best multiple of ``A q`` reproduces ``b``.

Pieces
------
* :class:`DCDMNet`: the architecture of reference §2.2, 2-D or 3-D.
* :func:`apply_to_unknowns`: unknown vectors (B, n) -> grid -> net -> unknown vectors (B, n),
  differentiable, for training and for the solver.
* :func:`network_direction`: the no-grad callable ``r (n,) -> q (n,)`` that ``dcdm_solve`` takes.
* :func:`dcdm_loss`: the scale-invariant loss of reference §2.3, vectorised over the batch (the
  reference loops over samples and divides by the configured, not the actual, batch size: §5
  pitfall 2).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neuropde.pde.poisson import PoissonSystem

__all__ = ["DCDMNet", "apply_to_unknowns", "network_direction", "dcdm_loss", "dcdm_parameter_count"]


def dcdm_parameter_count(dim: int = 3, channels: int = 16, n_full: int = 1, n_half: int = 3, n_up: int = 2) -> int:
    """Parameters of :class:`DCDMNet` without building it.

    ``k = 3^dim`` weights per kernel: the lifting conv ``k·C + C``, ``2 + 2(n_full + n_half + n_up)``
    convs ``C → C`` of ``k·C² + C`` each, and the per-voxel output layer ``C + 1``.
    3-D, C = 16: (1, 3, 2) -> 97 457 and (2, 5, 3) -> 152 881, the reference's two models.
    """
    k = 3 ** int(dim)
    C = int(channels)
    n_conv = 2 + 2 * (int(n_full) + int(n_half) + int(n_up))
    return (k * C + C) + n_conv * (k * C * C + C) + (C + 1)


class DCDMNet(nn.Module):
    """DCDM's CNN ``f_θ ≈ c·A⁻¹`` (reference §2.2): (B, N, N[, N]) or (B, 1, N, N[, N]) -> same shape.

    ::

        c0 = Conv(1 → C)                                   (linear)
        a  = ReLU(Conv(c0))
        n_full ×:  t = ReLU(Conv(a));  a = ReLU(Conv(t)) + a
        f  = ReLU(Conv(a))                                 (full-resolution features)
        h  = AvgPool(2)(f)
        n_half ×:  t = ReLU(Conv(h));  h = ReLU(Conv(t)) + h
        v  = Upsample×2(h) + f                             (nearest neighbour)
        n_up ×:    t = ReLU(Conv(v));  v = ReLU(Conv(t)) + v
        out = Linear(C → 1) per voxel

    Every Conv is 3×3 (2-D) or 3×3×3 (3-D) with "same" zero padding and a bias; the skips are
    added after the activation, as in the reference. The weights do not depend on the grid size,
    so a model trained at one N runs at any other.

    Parameter count (:func:`dcdm_parameter_count`): 97 457 for the reference setting
    ``dim=3, channels=16, n_full=1, n_half=3, n_up=2``; 32 657 for the same setting in 2-D.

    Odd sizes: the average pool uses ``ceil_mode`` (the last, partial window averages only the
    cells inside the grid), the upsampled field has size ``2·⌈N/2⌉`` and is cropped to ``N``. Even
    sizes are unaffected. The grid need not be square.

    Parameters
    ----------
    dim : 2 (Conv2d) or 3 (Conv3d).
    channels : C, feature channels (16 in the reference).
    n_full, n_half, n_up : residual blocks at full resolution, half resolution, and after the
        upsampling (1, 3, 2 for the reference model trained at 64³; 2, 5, 3 for 128³).

    Initialisation is PyTorch's default for every layer.
    """

    def __init__(self, dim: int = 3, channels: int = 16, n_full: int = 1, n_half: int = 3, n_up: int = 2):
        super().__init__()
        if int(dim) not in (2, 3):
            raise ValueError(f"dim must be 2 (Conv2d) or 3 (Conv3d); got {dim}")
        if int(channels) < 1:
            raise ValueError(f"channels must be ≥ 1; got {channels}")
        if min(int(n_full), int(n_half), int(n_up)) < 0:
            raise ValueError(f"block counts must be ≥ 0; got n_full={n_full}, n_half={n_half}, n_up={n_up}")
        self.dim, self.channels = int(dim), int(channels)
        Conv = nn.Conv3d if self.dim == 3 else nn.Conv2d
        C = self.channels

        def conv(c_in: int = C, c_out: int = C) -> nn.Module:
            return Conv(c_in, c_out, kernel_size=3, padding=1)

        def blocks(count: int) -> nn.ModuleList:
            return nn.ModuleList(nn.ModuleList([conv(), conv()]) for _ in range(int(count)))

        self.lift = conv(1, C)
        self.entry = conv()
        self.full_blocks = blocks(n_full)
        self.features = conv()
        self.half_blocks = blocks(n_half)
        self.up_blocks = blocks(n_up)
        self.head = Conv(C, 1, kernel_size=1)  # the per-voxel Dense(C → 1)
        self._pool = F.avg_pool3d if self.dim == 3 else F.avg_pool2d

    @staticmethod
    def _residual(x: torch.Tensor, pairs: nn.ModuleList) -> torch.Tensor:
        for first, second in pairs:
            x = torch.relu(second(torch.relu(first(x)))) + x
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, *grid) or (B, 1, *grid) with ``len(grid) == dim``; returns the same shape."""
        squeeze = x.dim() == self.dim + 1
        if squeeze:
            x = x.unsqueeze(1)
        elif x.dim() != self.dim + 2 or x.shape[1] != 1:
            raise ValueError(f"DCDMNet(dim={self.dim}) takes (B, *grid) or (B, 1, *grid) with {self.dim} grid axes; "
                             f"got shape {tuple(x.shape)}")
        grid = x.shape[2:]
        a = torch.relu(self.entry(self.lift(x)))
        a = self._residual(a, self.full_blocks)
        f = torch.relu(self.features(a))
        h = self._pool(f, kernel_size=2, ceil_mode=True)
        h = self._residual(h, self.half_blocks)
        up = F.interpolate(h, scale_factor=2, mode="nearest")
        v = up[(..., *(slice(0, s) for s in grid))] + f  # crop: odd sizes were rounded up by the pool
        v = self._residual(v, self.up_blocks)
        out = self.head(v)
        return out.squeeze(1) if squeeze else out


def apply_to_unknowns(net: nn.Module, system: PoissonSystem, r: torch.Tensor) -> torch.Tensor:
    """Run ``net`` on unknown vectors: (B, n) or (n,) -> same shape, differentiable.

    The vectors are scattered to the grid (zeros on SOLID and EMPTY cells, as the reference feeds
    its network), passed through ``net`` in the dtype and on the device of its parameters, and the
    values on the fluid cells are gathered back and returned in ``r``'s dtype and device.
    """
    if not isinstance(r, torch.Tensor):
        raise ValueError(f"r must be a torch Tensor (B, n) or (n,); got {type(r).__name__}: wrap it with torch.as_tensor")
    single = r.dim() == 1
    if r.dim() not in (1, 2) or r.shape[-1] != system.n:
        raise ValueError(f"r must be (B, n) or (n,) with n = {system.n} unknowns; got shape {tuple(r.shape)}")
    param = next(net.parameters(), None)
    dtype = param.dtype if param is not None else r.dtype
    device = param.device if param is not None else r.device
    rb = r.reshape(-1, system.n).to(dtype=dtype, device=device)
    q = system.from_grid(net(system.to_grid(rb)))
    q = q.to(dtype=r.dtype, device=r.device)
    return q[0] if single else q


def network_direction(net: nn.Module, system: PoissonSystem):
    """The callable ``r (n,) -> q (n,)`` for :func:`~neuropde.solvers.dcdm.dcdm_solve`, without autograd."""

    def direction(r: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return apply_to_unknowns(net, system, r)

    return direction


def dcdm_loss(q: torch.Tensor, b: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """DCDM's scale-invariant loss, mean over the batch (reference §2.3).

    ``L = mean_i ‖b_i − (s_i / t_i) · A q_i‖²`` with ``s_i = b_iᵀ q_i`` and ``t_i = q_iᵀ A q_i``:
    ``(s/t)·q`` is the exact line-search step along ``q`` from 0, so ``L`` is the squared residual
    after one step of the solver along the network's direction. It is invariant to the scale of
    ``q`` and zero iff ``A q ∥ b``, e.g. for ``q = c·A⁻¹b``. The mean divides by the actual batch
    length.

    Guard: ``s/t`` is evaluated as ``s t / (t² + ε²)`` with ``ε = eps(dtype)·‖q‖‖Aq‖`` (which is
    ≥ |t| by Cauchy–Schwarz, so ε is negligible unless ``t`` is rounding noise, i.e. ``q`` is
    numerically in the null space of A or zero). The step then goes to 0 and the sample's loss to
    ``‖b‖²`` instead of overflowing; the guard scales like ``t`` and keeps the scale invariance.

    Parameters
    ----------
    q : (B, n) or (n,) network outputs on the unknowns.
    b : same shape, the inputs (unit norm in training, but any norm works).
    A : torch sparse CSR (or dense) (n, n) in q's dtype and on q's device; the batch is multiplied
        at once as ``A @ Q.T``.

    Returns
    -------
    scalar Tensor, differentiable in q.
    """
    if q.shape != b.shape or q.dim() not in (1, 2):
        raise ValueError(f"q and b must have the same shape (B, n) or (n,); got {tuple(q.shape)} and {tuple(b.shape)}")
    if A.dtype != q.dtype or A.device != q.device:
        raise ValueError(f"A is {A.dtype} on {A.device} but q is {q.dtype} on {q.device}: build A with "
                         f"system.matrix_torch(dtype=q.dtype, device=q.device)")
    Q = q.reshape(-1, q.shape[-1])
    Bm = b.reshape(-1, b.shape[-1])
    AQ = (A @ Q.T).T  # (B, n): one sparse product for the whole batch
    s = (Bm * Q).sum(dim=1)
    t = (Q * AQ).sum(dim=1)
    eps = torch.finfo(q.dtype).eps
    floor2 = (eps * torch.linalg.vector_norm(Q, dim=1) * torch.linalg.vector_norm(AQ, dim=1)) ** 2
    ratio = s * t / (t * t + floor2 + torch.finfo(q.dtype).tiny)
    return ((Bm - ratio[:, None] * AQ) ** 2).sum(dim=1).mean()
