"""Latent Spectral Model (LSM, Wu et al., ICML 2023, arXiv 2301.12664) on regular 2D grids.

A U-Net whose skip connections each pass through a *neural spectral block* (NSB): the feature map
of a scale is cut into patches, a few learned latent tokens per head attend to each patch's pixels,
a learned per-channel sine/cosine series acts element-wise on the tokens ("multiple basis
operators"), and the pixels attend back to the transformed tokens. Frames are channels, as in the
project's other models: (B, t_in, H, W) -> (B, t_out, H, W).

Written from the project's notes (shared/reference/lsm.md); differences from the reference code,
all deliberate:

* (H, W) order everywhere: ``patch_size`` is (p_h, p_w) and the padding is derived from it, so the
  reference's (W, H) padding / (H, W) patch mix-up cannot happen (notes §5.2).
* The padding needed by the patches is computed from the input size at every call (any H × W
  works) and cropped with explicit end indices (the reference's ``:-0`` crop bug, §5.3).
* The basis frequencies are a non-persistent buffer, so the model builds and runs on CPU (§5.1).
* Attention keeps the reference's unscaled logits (no 1/sqrt(d)), as the method was trained that
  way (§5.9); the tokens and the transition coefficients start small (U(0, 1)/C), which keeps the
  softmax away from saturation at initialisation.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def patchify(x: torch.Tensor, patch: tuple[int, int]) -> torch.Tensor:
    """(N, C, h, w) -> (N·(h/p_h)·(w/p_w), p_h·p_w, C): each patch one sample, pixels row-major.

    Patches are ordered (n, patch row, patch column); :func:`depatchify` is the exact inverse.
    """
    N, C, h, w = x.shape
    ph, pw = patch
    x = x.reshape(N, C, h // ph, ph, w // pw, pw)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(N * (h // ph) * (w // pw), ph * pw, C)


def depatchify(p: torch.Tensor, shape: tuple[int, int, int, int], patch: tuple[int, int]) -> torch.Tensor:
    """(N·(h/p_h)·(w/p_w), p_h·p_w, C) -> (N, C, h, w) with ``shape`` = (N, C, h, w)."""
    N, C, h, w = shape
    ph, pw = patch
    p = p.reshape(N, h // ph, w // pw, ph, pw, C)
    return p.permute(0, 5, 1, 3, 2, 4).reshape(N, C, h, w)


class NeuralSpectralBlock2d(nn.Module):
    """Neural spectral block (notes §2.2): (N, C, h, w) -> (N, C, h, w).

    Parameters
    ----------
    width : C, channels; must be divisible by ``n_heads`` (head dimension d = C / n_heads).
    n_basis : K, frequencies π·i/K, i = 0..K-1, of the sine/cosine transition.
    n_tokens : M, latent tokens per head (shared by all patches and samples).
    patch_size : (p_h, p_w). An axis of the input shorter than its patch length is taken whole
        (the whole scale is one patch along that axis); a longer axis must be a multiple of it.
    n_heads : attention heads.
    """

    def __init__(self, width: int, n_basis: int = 12, n_tokens: int = 4,
                 patch_size: tuple[int, int] = (4, 4), n_heads: int = 8):
        super().__init__()
        if width % n_heads:
            raise ValueError(f"LSM width {width} must be divisible by n_heads={n_heads}; "
                             f"set model.width to a multiple of {n_heads} or change model.n_heads")
        if n_basis < 1 or n_tokens < 1:
            raise ValueError(f"n_basis and n_tokens must be >= 1, got {n_basis} and {n_tokens}")
        if len(patch_size) != 2 or min(patch_size) < 1:
            raise ValueError(f"patch_size must be two positive ints (p_h, p_w), got {patch_size}")
        self.width, self.n_heads, self.head_dim = int(width), int(n_heads), int(width) // int(n_heads)
        self.n_basis, self.n_tokens = int(n_basis), int(n_tokens)
        self.patch_size = (int(patch_size[0]), int(patch_size[1]))
        # Tokens (heads, M, d) and coefficients (C, 2K: sine then cosine) as in the reference,
        # U(0, 1)/C: the transition starts as identity + a small smooth per-channel offset.
        self.tokens = nn.Parameter(torch.rand(self.n_heads, self.n_tokens, self.head_dim) / width)
        self.coefficients = nn.Parameter(torch.rand(width, 2 * self.n_basis) / width)
        # Not saved in checkpoints (derived from n_basis) and moves with .to(device).
        self.register_buffer("frequencies", math.pi * torch.arange(self.n_basis) / self.n_basis,
                             persistent=False)
        # 1×1 convolutions are pointwise, so they are applied before patchifying (same result,
        # one conv call per scale).
        self.to_kv = nn.Conv2d(width, 2 * width, 1)
        self.to_q = nn.Conv2d(width, width, 1)

    def effective_patch(self, h: int, w: int) -> tuple[int, int]:
        """Patch size used on an h × w map (an axis shorter than the patch is one patch)."""
        ph, pw = min(self.patch_size[0], h), min(self.patch_size[1], w)
        if h % ph or w % pw:
            raise ValueError(f"a {h}×{w} feature map does not split into whole {ph}×{pw} patches; "
                             "pad the field so that each axis is a multiple of the patch size "
                             "(LSM.forward does this automatically)")
        return ph, pw

    def transition(self, z: torch.Tensor) -> torch.Tensor:
        """Element-wise per-channel series on tokens z: (..., heads, M, d) -> same shape.

        z'[c] = z[c] + Σ_i w_s[c, i]·sin(π i z[c]/K) + w_c[c, i]·cos(π i z[c]/K), channel
        c = head·d + j. (sin(0) = 0, so w_s[:, 0] never receives a gradient; it is kept so the
        parameter count matches the reference.)
        """
        w = self.coefficients.view(self.n_heads, self.head_dim, 2, self.n_basis)
        arg = z.unsqueeze(-1) * self.frequencies  # (..., heads, M, d, K)
        # (heads, 1, d, K) broadcasts over the M tokens and the leading batch dimensions.
        series = torch.sin(arg) * w[:, None, :, 0] + torch.cos(arg) * w[:, None, :, 1]
        return z + series.sum(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, h, w) -> (N, C, h, w)."""
        if x.dim() != 4 or x.shape[1] != self.width:
            raise ValueError(f"this neural spectral block takes (N, {self.width}, h, w), "
                             f"got {tuple(x.shape)}")
        N, C, h, w = x.shape
        patch = self.effective_patch(h, w)
        heads, d = self.n_heads, self.head_dim

        def split_heads(t: torch.Tensor) -> torch.Tensor:  # (B', P, C) -> (B', heads, P, d)
            return t.reshape(t.shape[0], t.shape[1], heads, d).transpose(1, 2)

        k, v = patchify(self.to_kv(x), patch).chunk(2, dim=-1)
        k, v = split_heads(k), split_heads(v)
        # Tokens attend to the patch's pixels (softmax over pixels, unscaled as in the reference).
        z = torch.softmax(self.tokens @ k.transpose(-1, -2), dim=-1) @ v + self.tokens  # (B', heads, M, d)
        z = self.transition(z)
        # Pixels attend back to the tokens (keys = values = transformed tokens).
        q = split_heads(patchify(self.to_q(x), patch))  # (B', heads, P, d)
        y = torch.softmax(q @ z.transpose(-1, -2), dim=-1) @ z  # (B', heads, P, d)
        y = y.transpose(1, 2).reshape(y.shape[0], -1, C)
        return x + depatchify(y, (N, C, h, w), patch)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    # Up to 8 groups (channel counts here are multiples of n_heads, so gcd is a divisor).
    return nn.GroupNorm(math.gcd(8, channels), channels)


class DoubleConv(nn.Module):
    """[Conv3×3 (no bias: the norm re-centres) -> norm -> ReLU] × 2: (N, c_in, h, w) -> (N, c_out, h, w)."""

    def __init__(self, c_in: int, c_out: int, c_mid: int | None = None, norm: str = "batch"):
        super().__init__()
        c_mid = c_mid or c_out
        self.net = nn.Sequential(
            nn.Conv2d(c_in, c_mid, 3, padding=1, bias=False), _norm(norm, c_mid), nn.ReLU(inplace=True),
            nn.Conv2d(c_mid, c_out, 3, padding=1, bias=False), _norm(norm, c_out), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LSM(nn.Module):
    """Latent Spectral Model over frames-as-channels: (B, t_in, H, W) -> (B, t_out, H, W).

    Parameters
    ----------
    t_in, t_out : input / output frames (channels).
    width : C (``d_model``), channels of the finest scale; divisible by ``n_heads``.
    n_tokens : M latent tokens per head; ``n_basis`` : K sine/cosine frequencies; ``n_heads`` : heads.
    patch_size : (p_h, p_w) patches of every neural spectral block (same at every scale).
    n_scales : U-Net scales S; encoder widths C, 2C, 4C, ..., doubling up to scale S-2, and the
        coarsest scale as wide as the one above it (C, 2C, 4C, 8C, 8C for S = 5, as the reference).
    positional_embedding : append (y, x) grid channels, linspace(0, 1) over the input grid.
    norm : ``"batch"`` (reference; statistics depend on the batch and on train/eval mode) or
        ``"group"`` (GroupNorm, batch-independent: for batches of one or two, or comparisons
        across batch sizes).

    Any H × W is accepted: after lifting, the features are zero-padded at the bottom and right so
    that H and W become multiples of 2^(S-1)·p_h and 2^(S-1)·p_w (every scale then splits into
    whole patches), and the padding is cropped before the output MLP. Zero padding after the lift
    follows the reference; padding at the end only keeps pixel (0, 0) aligned across grid sizes.
    """

    def __init__(self, t_in: int, t_out: int, width: int = 64, n_tokens: int = 4, n_basis: int = 12,
                 n_heads: int = 8, patch_size: tuple[int, int] = (4, 4), n_scales: int = 5,
                 positional_embedding: bool = True, norm: str = "batch"):
        super().__init__()
        self.t_in, self.t_out = int(t_in), int(t_out)
        if width % n_heads:
            raise ValueError(f"LSM width {width} must be divisible by n_heads={n_heads}; "
                             f"set model.width to a multiple of {n_heads}")
        if n_scales < 1:
            raise ValueError(f"n_scales must be >= 1, got {n_scales}")
        if norm not in ("batch", "group"):
            raise ValueError(f"norm must be 'batch' or 'group', got {norm!r}")
        if len(patch_size) != 2 or min(patch_size) < 1:
            raise ValueError(f"patch_size must be two positive ints (p_h, p_w), got {patch_size}")
        self.width, self.n_scales = int(width), int(n_scales)
        self.patch_size = (int(patch_size[0]), int(patch_size[1]))
        self.positional_embedding = bool(positional_embedding)
        C = self.width
        widths = [C * 2 ** s for s in range(self.n_scales - 1)] + [C * 2 ** max(self.n_scales - 2, 0)]
        self.widths = widths

        self.lift = nn.Conv2d(self.t_in + 2 * self.positional_embedding, C, 1)  # pointwise Linear
        self.encoders = nn.ModuleList(
            [DoubleConv(C, C, norm=norm)]
            + [DoubleConv(widths[s - 1], widths[s], norm=norm) for s in range(1, self.n_scales)])
        self.blocks = nn.ModuleList(
            [NeuralSpectralBlock2d(c, n_basis, n_tokens, self.patch_size, n_heads) for c in widths])
        # Decoder at scale s = S-2..0 takes [upsampled deeper output, skip of scale s], mid width
        # = input/2, output = width of scale s-1 (C at the finest): 16C -> 4C -> 2C -> C -> C for S = 5.
        decoders, c_deep = [], widths[-1]
        for s in range(self.n_scales - 2, -1, -1):
            c_in, c_out = c_deep + widths[s], widths[s - 1] if s > 0 else C
            decoders.append(DoubleConv(c_in, c_out, c_in // 2, norm=norm))
            c_deep = c_out
        self.decoders = nn.ModuleList(decoders)
        self.out_conv = nn.Conv2d(C, C, 1)
        self.head = nn.Sequential(nn.Conv2d(C, 128, 1), nn.GELU(), nn.Conv2d(128, self.t_out, 1))

    def padded_size(self, H: int, W: int) -> tuple[int, int]:
        """Grid size the U-Net runs on: H, W rounded up to multiples of 2^(S-1)·(p_h, p_w)."""
        mh = 2 ** (self.n_scales - 1) * self.patch_size[0]
        mw = 2 ** (self.n_scales - 1) * self.patch_size[1]
        return -(-H // mh) * mh, -(-W // mw) * mw

    def forward(self, x: torch.Tensor, t_out: int | None = None) -> torch.Tensor:
        """x: (B, t_in, H, W) -> (B, t_out, H, W)."""
        if x.dim() != 4 or x.shape[1] != self.t_in:
            raise ValueError(f"this LSM takes (B, {self.t_in}, H, W) fields, got {tuple(x.shape)}; "
                             f"set data.window.t_in={self.t_in}")
        if t_out not in (None, self.t_out):
            raise ValueError(f"this LSM predicts exactly {self.t_out} frames (got t_out={t_out}); "
                             f"set data.window.t_out={self.t_out} or roll it out autoregressively")
        B, _, H, W = x.shape
        if self.positional_embedding:
            gy = torch.linspace(0, 1, H, dtype=x.dtype, device=x.device).view(1, 1, H, 1).expand(B, 1, H, W)
            gx = torch.linspace(0, 1, W, dtype=x.dtype, device=x.device).view(1, 1, 1, W).expand(B, 1, H, W)
            x = torch.cat([x, gy, gx], dim=1)
        h = self.lift(x)  # (B, C, H, W)
        Hp, Wp = self.padded_size(H, W)
        h = F.pad(h, (0, Wp - W, 0, Hp - H))  # F.pad order: (left, right, top, bottom) of (H, W)

        skips = []  # NSB outputs, finest first: (B, widths[s], Hp/2^s, Wp/2^s)
        for s, (enc, nsb) in enumerate(zip(self.encoders, self.blocks)):
            if s:
                h = F.max_pool2d(h, 2)
            h = enc(h)
            skips.append(nsb(h))
        h = skips[-1]
        for dec, skip in zip(self.decoders, reversed(skips[:-1])):
            # Sizes divide exactly, so ×2 lands on the skip's size; no alignment padding needed.
            h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=True)
            h = dec(torch.cat([skip, h], dim=1))
        h = self.out_conv(h)[..., :H, :W]  # explicit end indices: crop is right even with no padding
        return self.head(h)
