"""Multi-grid domain decomposition (MG-TFNO, Kossaifi et al. 2023): model-agnostic patch and stitch.

A field (B, C, H, W) is cut into 2^L × 2^L fine patches that go through the model as extra batch
entries; each patch carries, as extra channels, L coarse views of its surroundings, so a model
trained on small patches still sees the large scales. Conventions (all periodic, as the fields are):

* Patch size: h = ceil(H / 2^L), w = ceil(W / 2^L). When 2^L does not divide H, the patch grid
  covers n·h ≥ H rows and the rows past H wrap round to the top of the field (a circular
  extension); ``stitch`` crops them off again, so any H, W ≥ 2^L works, rectangular too.
* Context padding in fine pixels: pad_h = floor(padding·h + 1/2) (round half up), likewise pad_w.
  Every patch and context window is S_h × S_w = (h + 2·pad_h) × (w + 2·pad_w) pixels.
* Patch order: batch-major, patch index = b·4^L + row·2^L + col.
* Channels: [fine patch | level-1 context | ... | level-L context], C each, so C·(L+1) in all.
* Level ℓ context: the window of S_h × S_w pixels at 2^ℓ-times coarser resolution centred on the
  fine patch's centre (to within half a fine pixel when h or w is odd), circular wrap. Each coarse
  pixel is the mean of its 2^ℓ × 2^ℓ block of fine pixels, not one sample of it: the mean is a
  low-pass filter, so scales finer than the coarse grid cannot alias into the context as spurious
  large-scale signal. The blocks are aligned on each window rather than on one global coarse grid,
  which is what keeps the centring exact for any H, W (a global grid needs H divisible by 2^(2L+1)).
* ``levels=0`` is the identity (the padding is then unused).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class MultiGridPatching:
    """Cuts fields into multi-grid patches and stitches model outputs back together.

    Parameters
    ----------
    levels : L ≥ 0; 4^L patches per sample and L context levels.
    padding : context padding as a fraction of the patch size, in [0, 1).
    """

    def __init__(self, levels: int, padding: float = 0.0):
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 0:
            raise ValueError(f"levels must be an integer >= 0 (0 = no patching), got {levels!r}")
        if not 0.0 <= padding < 1.0:
            raise ValueError(f"padding is a fraction of the patch size and must lie in [0, 1), got {padding!r}")
        self.levels = levels
        self.padding = float(padding)

    @property
    def patches_per_sample(self) -> int:
        return 4 ** self.levels

    def in_channels(self, c: int) -> int:
        """Channels the wrapped model receives for a C-channel field: C·(L+1)."""
        return c * (self.levels + 1)

    def _geometry(self, H: int, W: int) -> tuple[int, int, int, int]:
        """(h, w, pad_h, pad_w) for an H × W field."""
        n = 2 ** self.levels
        if H < n or W < n:
            raise ValueError(f"a {H}x{W} field is too small for levels={self.levels}: patches would be smaller "
                             f"than one pixel; use levels <= {int(math.log2(min(H, W)))} or a larger field")
        h, w = -(-H // n), -(-W // n)
        return h, w, math.floor(self.padding * h + 0.5), math.floor(self.padding * w + 0.5)

    @staticmethod
    def _check_4d(x: torch.Tensor, name: str) -> None:
        if x.dim() != 4:
            raise ValueError(f"{name} must be 4-D (B, C, H, W), got shape {tuple(x.shape)}; "
                             "add missing batch/channel axes, e.g. x[None] or x.unsqueeze(1)")

    def patch(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B·4^L, C·(L+1), h + 2·pad_h, w + 2·pad_w)."""
        self._check_4d(x, "the input")
        if self.levels == 0:
            return x
        B, C, H, W = x.shape
        h, w, ph, pw = self._geometry(H, W)
        n, Sh, Sw = 2 ** self.levels, h + 2 * ph, w + 2 * pw
        views = []
        for level in range(self.levels + 1):
            k = 2 ** level
            field = x
            if k > 1:
                # mean of the k × k block starting at each fine pixel (circular); sampling this every k
                # pixels gives the block means without a global coarse grid. k <= 2^L <= H, W here.
                field = F.avg_pool2d(F.pad(x, (0, k - 1, 0, k - 1), mode="circular"), k, stride=1)
            # first fine pixel of each window: S·k fine pixels wide, centred on the patch centre r·h + h/2
            # (level 0 gives r·h - pad). The modulo is the circular padding and the wrap past H alike.
            rows = (torch.arange(n, device=x.device)[:, None] * h + (h - Sh * k) // 2
                    + k * torch.arange(Sh, device=x.device)) % H                      # (n, Sh)
            cols = (torch.arange(n, device=x.device)[:, None] * w + (w - Sw * k) // 2
                    + k * torch.arange(Sw, device=x.device)) % W                      # (n, Sw)
            win = field[:, :, rows][..., cols]                                       # (B, C, n, Sh, n, Sw)
            views.append(win.permute(0, 2, 4, 1, 3, 5).reshape(B * n * n, C, Sh, Sw))
        return torch.cat(views, dim=1)

    def stitch(self, y: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """(B·4^L, C_out, h + 2·pad_h, w + 2·pad_w) -> (B, C_out, H, W) with (H, W) = ``shape``."""
        self._check_4d(y, "the model output")
        if self.levels == 0:
            return y
        H, W = shape
        h, w, ph, pw = self._geometry(H, W)
        n = 2 ** self.levels
        N, C_out, Sh, Sw = y.shape
        if N % (n * n) or (Sh, Sw) != (h + 2 * ph, w + 2 * pw):
            raise ValueError(f"cannot stitch {tuple(y.shape)} into a {H}x{W} field: expected (B*{n * n}, C_out, "
                             f"{h + 2 * ph}, {w + 2 * pw}); the model must keep the patch size and batch axis")
        # explicit end indices: a `pad:-pad` slice would be empty for pad = 0
        core = y[:, :, ph:ph + h, pw:pw + w].reshape(N // (n * n), n, n, C_out, h, w)
        full = core.permute(0, 3, 1, 4, 2, 5).reshape(N // (n * n), C_out, n * h, n * w)
        return full[:, :, :H, :W]
