"""LeMON: learning to learn multi-operator networks (Sun, Zhang, Schaeffer, arXiv 2408.16168).

One network maps an initial field ``u0`` to the next ``T`` frames for many 1-D operators at once;
which operator applies is read from a few example trajectories of it (the *context*), pooled into
one operator embedding. The same network is pre-trained on many operators, fine-tuned (optionally
through LoRA adapters) or meta-learned (first-order MAML, :mod:`neuropde.tasks.lemon`).

:class:`LeMONNet` = :class:`OperatorEncoder` (context -> z) + one backbone taking ``(u0, z)``:
:class:`TransformerBackbone` (patch tokens + operator token, queries per output time, cross-
attention decoder: the data path of PROSE, frames read out patch by patch), :class:`FNOBackbone`
(neuraloperator's 1-D FNO on ``[u0, z]`` channels) or :class:`DeepONetBackbone` (branch on
``[u0, z]``, trunk on ``(t, x)``). Fields enter and leave normalised; the task owns the statistics.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LeMONNet", "OperatorEncoder", "TransformerBackbone", "FNOBackbone", "DeepONetBackbone",
           "Attention", "EncoderBlock", "DecoderBlock", "mlp"]

BACKBONES = ("transformer", "fno", "deeponet")


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with GELU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


class Attention(nn.Module):
    """Multi-head (self- or cross-) attention with four separate ``nn.Linear`` projections.

    Not ``nn.MultiheadAttention``: that module reads ``out_proj.weight`` directly and keeps q/k/v in
    one raw parameter, so LoRA adapters (which wrap ``nn.Linear`` modules) could not reach it.
    """

    def __init__(self, d: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if d % heads:
            raise ValueError(f"d_model={d} must be divisible by n_heads={heads}")
        self.heads, self.dropout = int(heads), float(dropout)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x: Tensor, memory: Tensor | None = None) -> Tensor:
        """x: (B, Lq, d) queries; memory: (B, Lk, d) keys/values (x itself when None) -> (B, Lq, d)."""
        memory = x if memory is None else memory
        B, Lq, d = x.shape

        def split(t: Tensor) -> Tensor:  # (B, L, d) -> (B, heads, L, d / heads)
            return t.view(B, t.shape[1], self.heads, d // self.heads).transpose(1, 2)

        y = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(memory)), split(self.v(memory)),
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.o(y.transpose(1, 2).reshape(B, Lq, d))


class EncoderBlock(nn.Module):
    """Pre-LayerNorm transformer layer: x + attn(LN x), then x + FFN(LN x)."""

    def __init__(self, d: int, heads: int, d_ff: int, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = Attention(d, heads, dropout)
        self.ffn = mlp([d, d_ff, d])

    def forward(self, x: Tensor) -> Tensor:
        """(B, L, d) -> (B, L, d)."""
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class DecoderBlock(nn.Module):
    """Pre-LayerNorm decoder layer: self-attention over the queries, cross-attention to the
    encoded tokens, FFN (the layer structure of PROSE's operator decoder)."""

    def __init__(self, d: int, heads: int, d_ff: int, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_attn, self.cross_attn = Attention(d, heads, dropout), Attention(d, heads, dropout)
        self.ffn = mlp([d, d_ff, d])

    def forward(self, q: Tensor, memory: Tensor) -> Tensor:
        """q: (B, T, d) queries, memory: (B, L, d) -> (B, T, d)."""
        q = q + self.self_attn(self.norm1(q))
        q = q + self.cross_attn(self.norm2(q), memory)
        return q + self.ffn(self.norm3(q))


def context_frame_index(t_total: int, frames: int) -> Tensor:
    """``frames`` evenly spaced frame indices in [0, t_total), the last frame included."""
    return torch.linspace(0, t_total - 1, frames).round().long()


class OperatorEncoder(nn.Module):
    """Context examples of one operator -> operator embedding z (a deep set over examples).

    Each example (its initial field and ``frames`` frames subsampled evenly from its trajectory,
    the last one included) is cut into spatial patches of ``patch`` points; a token holds one
    patch of all ``frames + 1`` fields (Linear((frames + 1)·patch -> d) plus a learned position).
    The operator shows in how the frames of a patch relate to its initial values (which way and
    how fast the field moves, grows, smooths): that is a product of fields, which the token-wise
    FFN of the ``layers`` encoder blocks can form (embedding whole frames as single tokens leaves
    it to the attention weights, and was measured to learn far slower). The tokens are averaged
    into one vector per example, the examples are averaged (so z does not depend on their order
    or number) and a final MLP maps the result.
    """

    def __init__(self, n: int, d: int = 64, heads: int = 4, d_ff: int = 128, layers: int = 1,
                 frames: int = 4, patch: int = 8, dropout: float = 0.0):
        super().__init__()
        if frames < 1:
            raise ValueError(f"ctx_frames must be >= 1, got {frames}")
        if n % patch:
            raise ValueError(f"patch_size={patch} must divide the grid size n={n}")
        self.frames, self.patch = int(frames), int(patch)
        self.embed = nn.Linear((self.frames + 1) * self.patch, d)
        self.pos = nn.Parameter(0.02 * torch.randn(n // self.patch, d))
        self.blocks = nn.ModuleList(EncoderBlock(d, heads, d_ff, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d)
        self.out = mlp([d, d_ff, d])

    def forward(self, ctx_u0: Tensor, ctx_target: Tensor) -> Tensor:
        """ctx_u0: (B, E, n), ctx_target: (B, E, T, n) -> z: (B, d)."""
        B, E, n = ctx_u0.shape
        if E < 1:
            raise ValueError("the operator encoder needs at least one context example (E >= 1)")
        idx = context_frame_index(ctx_target.shape[2], self.frames).to(ctx_target.device)
        fields = torch.cat([ctx_u0[:, :, None], ctx_target[:, :, idx]], dim=2)  # (B, E, F+1, n)
        # (B·E, n/p tokens, (F+1)·p): one token = one patch of every field
        patches = fields.reshape(B * E, self.frames + 1, n // self.patch, self.patch).transpose(1, 2)
        tok = self.embed(patches.reshape(B * E, n // self.patch, -1)) + self.pos
        for blk in self.blocks:
            tok = blk(tok)
        per_example = self.norm(tok).mean(dim=1).reshape(B, E, -1)
        return self.out(per_example.mean(dim=1))


class TransformerBackbone(nn.Module):
    """Patch tokens of u0 (+ the operator token) -> encoder; one query per output time -> decoder;
    each frame decoded patch by patch from the encoded patch tokens.

    Queries are MLP(t_j) with t_j = j / T, j = 1..T, each cross-attending to the encoded tokens
    (PROSE's operator decoder). Patch i of frame j is MLP(q_j + m_i) (d -> d_ff -> patch points),
    m_i the encoded token of patch i: one MLP shared by every patch and time.

    Why not PROSE's head, Linear(d -> n) on q_j alone: there every frame is read from ONE
    attention-pooled d-vector, so the increments u(t_j) − u0 of all inputs lie in the column space
    of a fixed n × d matrix and nothing ties a point of the output to the same place of the input.
    On 48 trajectories (experiment=lemon_tiny) that head fitted the training set (relative L2 0.063)
    but stayed at the persistence error on new operators (0.19 vs 0.18, 3 seeds, up to 3000
    steps), where the FNO reached 0.065-0.087; decoding from the patch tokens reaches 0.053-0.13
    after 600 steps (``tests/test_lemon.py``). The shared head's weights see every patch, so an SGD
    step on them moves the output ~n / patch times further than one on the dense head did: the
    meta-learning inner learning rate must be smaller than for PROSE's head.
    """

    def __init__(self, n: int, t_out: int, d: int = 64, heads: int = 4, d_ff: int = 128, layers: int = 2,
                 dec_layers: int = 2, patch: int = 8, use_z: bool = True, dropout: float = 0.0):
        super().__init__()
        if n % patch:
            raise ValueError(f"patch_size={patch} must divide the grid size n={n}")
        self.patch, self.t_out, self.use_z = int(patch), int(t_out), bool(use_z)
        self.patch_embed = nn.Linear(patch, d)
        self.pos = nn.Parameter(0.02 * torch.randn(n // patch, d))
        # tells the attention which token is the operator and which are space
        self.z_type = nn.Parameter(0.02 * torch.randn(d)) if use_z else None
        self.encoder = nn.ModuleList(EncoderBlock(d, heads, d_ff, dropout) for _ in range(layers))
        self.enc_norm = nn.LayerNorm(d)
        self.time_mlp = mlp([1, d, d])
        self.decoder = nn.ModuleList(DecoderBlock(d, heads, d_ff, dropout) for _ in range(dec_layers))
        self.dec_norm = nn.LayerNorm(d)
        self.head = mlp([d, d_ff, patch])  # (time query + patch token) -> the patch's points

    def forward(self, u0: Tensor, z: Tensor | None) -> Tensor:
        """u0: (B, n), z: (B, d) or None -> (B, T, n)."""
        B, n = u0.shape
        tok = self.patch_embed(u0.view(B, n // self.patch, self.patch)) + self.pos
        if self.use_z:
            tok = torch.cat([(z + self.z_type)[:, None], tok], dim=1)
        for blk in self.encoder:
            tok = blk(tok)
        memory = self.enc_norm(tok)
        t = torch.arange(1, self.t_out + 1, device=u0.device, dtype=u0.dtype)[:, None] / self.t_out
        q = self.time_mlp(t).expand(B, -1, -1)
        for blk in self.decoder:
            q = blk(q, memory)
        space = memory[:, -(n // self.patch):]  # (B, L, d): the patch tokens (the operator token is first)
        out = self.head(self.dec_norm(q)[:, :, None] + space[:, None])  # (B, T, L, patch)
        return out.reshape(B, self.t_out, n)


class FNOBackbone(nn.Module):
    """neuraloperator's 1-D FNO (through :class:`neuropde.models.fno.FNO`, which handles odd grids)
    on the channels [u0, z broadcast along x] -> T output channels."""

    def __init__(self, n: int, t_out: int, d: int = 64, modes: int = 16, width: int = 32, layers: int = 4,
                 use_z: bool = True):
        super().__init__()
        from neuropde.models.fno import FNO

        self.use_z = bool(use_z)
        # neuraloperator counts modes over both signs: n_modes=m keeps wavenumbers |k| <= m // 2
        self.fno = FNO(t_in=1 + (d if use_z else 0), t_out=t_out, modes=(min(int(modes), n),), width=width,
                       n_layers=layers)

    def forward(self, u0: Tensor, z: Tensor | None) -> Tensor:
        """u0: (B, n), z: (B, d) or None -> (B, T, n)."""
        x = u0[:, None]
        if self.use_z:
            x = torch.cat([x, z[:, :, None].expand(-1, -1, u0.shape[-1])], dim=1)
        return self.fno(x)


class DeepONetBackbone(nn.Module):
    """Branch MLP on [u0, z] -> p coefficients; trunk MLP on (t, sin 2πx, cos 2πx) -> p basis
    functions; G(u0)(t, x) = Σ_k b_k τ_k(t, x) + bias. The trunk sees x through sin/cos so the
    basis is periodic like the data."""

    def __init__(self, n: int, t_out: int, d: int = 64, basis: int = 64, width: int = 128, depth: int = 3,
                 use_z: bool = True):
        super().__init__()
        self.use_z, self.n, self.t_out = bool(use_z), int(n), int(t_out)
        self.branch = mlp([n + (d if use_z else 0)] + [width] * (depth - 1) + [basis])
        self.trunk = mlp([3] + [width] * (depth - 1) + [basis])
        self.bias = nn.Parameter(torch.zeros(()))
        self.scale = 1.0 / math.sqrt(basis)  # keeps the output O(1) at initialisation

    def coordinates(self, device, dtype) -> Tensor:
        """Trunk inputs on the output grid: (T, n, 3) = (t, sin 2πx, cos 2πx), t = j/T, x = i/n."""
        t = torch.arange(1, self.t_out + 1, device=device, dtype=dtype) / self.t_out
        x = 2 * math.pi * torch.arange(self.n, device=device, dtype=dtype) / self.n
        tt, xx = torch.meshgrid(t, x, indexing="ij")
        return torch.stack([tt, torch.sin(xx), torch.cos(xx)], dim=-1)

    def forward(self, u0: Tensor, z: Tensor | None) -> Tensor:
        """u0: (B, n), z: (B, d) or None -> (B, T, n)."""
        b = self.branch(torch.cat([u0, z], dim=-1) if self.use_z else u0)  # (B, p)
        tau = self.trunk(self.coordinates(u0.device, u0.dtype))  # (T, n, p)
        return self.scale * torch.einsum("bp,txp->btx", b, tau) + self.bias


class LeMONNet(nn.Module):
    """One network for many operators: (u0, context of the same operator) -> next T frames.

    Parameters
    ----------
    n : grid points of every field.
    t_out : frames predicted (T).
    backbone : ``transformer`` (default) | ``fno`` | ``deeponet``.
    use_context : read the operator from context examples; False gives the operator-blind network
        (single-operator / from-scratch baseline, and LeMON v2's meta-learned backbones, which learn
        the operator by adaptation instead).
    d_model, n_heads, d_ff, dropout : width, heads, FFN width and dropout of the attention blocks
        (operator encoder and transformer backbone); d_model is also the size of z.
    n_layers, n_dec_layers : encoder / decoder blocks of the transformer backbone.
    patch_size : points per token, of u0 (transformer) and of the context fields (must divide n).
    ctx_frames, ctx_layers : frames taken from each context trajectory and blocks of the operator
        encoder.
    residual : predict u0 + network output (every frame starts from the initial field; most of
        these operators change it gradually).
    fno_modes, fno_width, fno_layers : the FNO backbone (modes counted over both signs, as
        neuraloperator does).
    basis, deeponet_width, deeponet_depth : the DeepONet backbone.
    """

    def __init__(self, n: int, t_out: int, backbone: str = "transformer", use_context: bool = True,
                 d_model: int = 64, n_heads: int = 4, d_ff: int = 128, n_layers: int = 2, n_dec_layers: int = 2,
                 patch_size: int = 8, ctx_frames: int = 4, ctx_layers: int = 1, dropout: float = 0.0,
                 residual: bool = True, fno_modes: int = 16, fno_width: int = 32, fno_layers: int = 4,
                 basis: int = 64, deeponet_width: int = 128, deeponet_depth: int = 3):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone={backbone!r}: choose one of {', '.join(BACKBONES)}")
        self.n, self.t_out, self.backbone_name = int(n), int(t_out), backbone
        self.use_context, self.residual = bool(use_context), bool(residual)
        self.encoder = (OperatorEncoder(n, d_model, n_heads, d_ff, ctx_layers, ctx_frames, patch_size, dropout)
                        if self.use_context else None)
        if backbone == "transformer":
            self.backbone = TransformerBackbone(n, t_out, d_model, n_heads, d_ff, n_layers, n_dec_layers,
                                                patch_size, self.use_context, dropout)
        elif backbone == "fno":
            self.backbone = FNOBackbone(n, t_out, d_model, fno_modes, fno_width, fno_layers, self.use_context)
        else:
            self.backbone = DeepONetBackbone(n, t_out, d_model, basis, deeponet_width, deeponet_depth,
                                             self.use_context)

    def encode_operator(self, ctx_u0: Tensor, ctx_target: Tensor) -> Tensor:
        """Operator embedding z (B, d) of the context examples (B, E, n), (B, E, T', n)."""
        return self.encoder(ctx_u0, ctx_target)

    def forward(self, u0: Tensor, ctx_u0: Tensor | None = None, ctx_target: Tensor | None = None) -> Tensor:
        """u0: (B, n); ctx_u0: (B, E, n); ctx_target: (B, E, T', n) (any T' >= 1) -> (B, T, n).

        The context is required when ``use_context`` and ignored otherwise.
        """
        if u0.dim() != 2 or u0.shape[-1] != self.n:
            raise ValueError(f"LeMONNet takes u0 of shape (B, {self.n}), got {tuple(u0.shape)}")
        z = None
        if self.use_context:
            if ctx_u0 is None or ctx_target is None:
                raise ValueError("LeMONNet(use_context=True) needs ctx_u0 (B, E, n) and ctx_target (B, E, T, n)")
            z = self.encode_operator(ctx_u0, ctx_target)
        out = self.backbone(u0, z)
        return out + u0[:, None] if self.residual else out
