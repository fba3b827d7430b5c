"""Low-rank adapters (LeMON's parametrisation): a frozen layer plus a trainable α·B A.

Three kinds of layer, chosen by ``add_lora(..., targets=...)``:

- ``linear``: ``nn.Linear``, W (out, in): y = W₀x + b₀ + α·B A x, B ∈ ℝ^{out×r}, A ∈ ℝ^{r×in}.
- ``conv1x1``: ``nn.Conv1d/2d/3d`` whose kernel sizes are all 1 (FNO lifting, projection, skips
  and channel MLPs), W (out, in, 1, …) seen as the out×in matrix it is: W = W₀ + α·B A, same
  factor shapes as ``linear``.
- ``spectral``: neuraloperator's ``SpectralConv`` with a dense complex weight W (in, out, *modes)
  (y_o(k) = Σ_i x_i(k) W[i, o, k]): per retained mode k an independent complex update
  ΔW[:, :, k] = α·A_k B_k, A ∈ ℂ^{*modes×in×r}, B ∈ ℂ^{*modes×r×out}.

In every kind B starts at zero (the adapted model equals the base model exactly) and A has
entries N(0, 1/r) (complex: E|a|² = 1/r); there is no 1/r factor on α (reference notes,
lemon.md 2.5). ``peft`` users get the same model with ``lora_alpha = α·r``. The base weights are
frozen; the factors are ordinary parameters read in ``forward``, so ``torch.func.functional_call``
with a dict of fast factor weights works for every kind (LeMON's few-shot adaptation uses it).

For AdaPreLoRA the linear layer can also accumulate the gradient of the full weight, G = ∂L/∂W
(out×in), from the output gradient and the input (a backward hook); its row and column statistics
precondition the factor update. That costs one out×in buffer per layer, like a weight gradient.
"""
from __future__ import annotations

import math

import torch
from torch import nn

TARGETS = ("linear", "conv1x1", "spectral")


def lora_delta(lora_A: torch.Tensor, lora_B: torch.Tensor, alpha: float, shape) -> torch.Tensor:
    """α·ΔW of any adapter kind, in the layout of its base weight (also used to merge checkpoints).

    Parameters
    ----------
    lora_A, lora_B : linear / 1×1 conv: (r, in), (out, r); spectral: (*modes, in, r), (*modes, r, out).
    alpha : scale (no 1/r).
    shape : shape of the base weight: (out, in), (out, in, 1, …) or (in, out, *modes).
    """
    if lora_A.dim() == 2:
        return (alpha * (lora_B @ lora_A)).reshape(shape)
    return alpha * torch.movedim(lora_A @ lora_B, (-2, -1), (0, 1))  # (*modes, in, out) -> (in, out, *modes)


def _wrap(adapter: nn.Module, base: nn.Module, rank: int, a_shape: tuple, b_shape: tuple, like: torch.Tensor) -> None:
    """Freeze ``base`` and register it, then lora_A ~ N(0, 1/r) (complex when ``like`` is) and lora_B = 0."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    adapter.base = base
    for p in base.parameters():
        p.requires_grad_(False)
    opts = dict(device=like.device, dtype=like.dtype)
    adapter.lora_A = nn.Parameter(torch.randn(*a_shape, **opts) / math.sqrt(rank))
    adapter.lora_B = nn.Parameter(torch.zeros(*b_shape, **opts))


class LoRALinear(nn.Module):
    """``base`` frozen, ``lora_B @ lora_A`` trainable.

    Parameters
    ----------
    base : nn.Linear, weight (out, in).
    rank : r.
    alpha : scale of the low-rank term (no 1/r).
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float = 1.0):
        super().__init__()
        out_features, in_features = base.weight.shape
        _wrap(self, base, rank, (rank, in_features), (out_features, rank), base.weight)
        self.alpha = float(alpha)
        self.record_full_grad = False
        # G = ∂L/∂W accumulated over backward passes until the optimizer reads and clears it
        self.register_buffer("full_grad", torch.zeros_like(base.weight), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in) -> (..., out)."""
        y = self.base(x) + self.alpha * nn.functional.linear(nn.functional.linear(x, self.lora_A), self.lora_B)
        if self.record_full_grad and y.requires_grad:
            inputs = x.detach()

            def accumulate(dy: torch.Tensor) -> None:
                self.full_grad.add_(dy.reshape(-1, dy.shape[-1]).mT @ inputs.reshape(-1, inputs.shape[-1]))

            y.register_hook(accumulate)
        return y

    def merged_weight(self) -> torch.Tensor:
        """W₀ + α·B A, shape (out, in)."""
        return self.base.weight + self.alpha * self.lora_B @ self.lora_A

    def extra_repr(self) -> str:
        return f"rank={self.lora_A.shape[0]}, alpha={self.alpha}"


class LoRAConv1x1(nn.Module):
    """A frozen 1×1 ``nn.Conv{1,2,3}d`` whose weight (out, in, 1, …) is W₀ + α·B A.

    The convolution runs once with the merged weight (the out×in×r product is negligible next to
    the convolution over the grid), so stride, padding and bias behave exactly as in the base.

    Parameters
    ----------
    base : nn.Conv1d/2d/3d, kernel sizes all 1, groups 1.
    rank, alpha : as :class:`LoRALinear`; lora_A (r, in), lora_B (out, r).
    """

    def __init__(self, base: nn.Conv1d | nn.Conv2d | nn.Conv3d, rank: int, alpha: float = 1.0):
        super().__init__()
        if not _is_conv1x1(base):
            raise ValueError(f"LoRAConv1x1 needs a 1x1 convolution with groups=1, got {base}")
        out_ch, in_ch = base.weight.shape[:2]
        _wrap(self, base, rank, (rank, in_ch), (out_ch, rank), base.weight)
        self.alpha = float(alpha)

    def merged_weight(self) -> torch.Tensor:
        """W₀ + α·B A, shape (out, in, 1, …) as the base weight."""
        w = self.base.weight
        return w + lora_delta(self.lora_A, self.lora_B, self.alpha, w.shape)

    @property
    def weight(self) -> torch.Tensor:
        """The effective weight, for code that reads ``conv.weight`` itself."""
        return self.merged_weight()

    def __getattr__(self, name: str):
        # Code around a conv reads its attributes (neuraloperator's Flattened1dConv reads
        # conv.out_channels): what is not a parameter or submodule of the adapter is the base's.
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base":
                raise
            return getattr(self.base, name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in, *space) -> (B, out, *space')."""
        return self.base._conv_forward(x, self.merged_weight(), self.base.bias)

    def extra_repr(self) -> str:
        return f"rank={self.lora_A.shape[0]}, alpha={self.alpha}"


class LoRASpectralWeight(nn.Module):
    """Stands in for ``SpectralConv.weight`` (a tltorch ``DenseTensor`` holding the complex
    (in, out, *modes) tensor): indexing it, as SpectralConv's forward does, gives a slice of
    W₀ + ΔW with ΔW[:, :, k] = α·A_k B_k. neuraloperator's dense contraction accepts a plain tensor.

    A ``torch.nn.utils.parametrize`` parametrization cannot be used here: it subclasses the module
    it parametrizes, and tltorch's FactorizedTensor refuses subclasses without a factorization name.

    Parameters
    ----------
    base : DenseTensor (or any module with a ``tensor`` attribute), (in, out, *modes) complex.
    rank, alpha : r and α; lora_A (*modes, in, r), lora_B (*modes, r, out), both complex.
    """

    def __init__(self, base: nn.Module, rank: int, alpha: float = 1.0):
        super().__init__()
        w = base.tensor
        in_ch, out_ch, *modes = w.shape
        _wrap(self, base, rank, (*modes, in_ch, rank), (*modes, rank, out_ch), w)
        self.alpha = float(alpha)

    @property
    def shape(self) -> torch.Size:
        return self.base.tensor.shape

    def to_tensor(self) -> torch.Tensor:
        """W₀ + ΔW, (in, out, *modes) complex."""
        w = self.base.tensor
        return w + lora_delta(self.lora_A, self.lora_B, self.alpha, w.shape)

    def __getitem__(self, index) -> torch.Tensor:
        return self.to_tensor()[index]

    def extra_repr(self) -> str:
        return f"shape={tuple(self.shape)}, rank={self.lora_A.shape[-1]}, alpha={self.alpha}"


def _is_conv1x1(m: nn.Module) -> bool:
    return (isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and m.groups == 1
            and all(k == 1 for k in m.kernel_size))


def _is_spectral(parent: nn.Module, attr: str) -> bool:
    try:
        from neuralop.layers.spectral_convolution import SpectralConv
    except ImportError:  # pragma: no cover - neuraloperator is a dependency
        return False
    return attr == "weight" and isinstance(parent, SpectralConv)


def add_lora(module: nn.Module, rank: int, alpha: float = 1.0, skip: tuple[str, ...] = (),
             targets: tuple[str, ...] = ("linear",)) -> list[str]:
    """Wrap the layers of the kinds in ``targets`` in adapters, freeze every other parameter, and
    return the names of the adapted layers (the prefixes of their ``lora_A`` / ``lora_B``).

    Parameters
    ----------
    module : the network, adapted in place.
    rank, alpha : r and α of every adapter.
    skip : layers under names containing one of these strings keep no adapter.
    targets : any of ``linear`` (``nn.Linear``, except the output projection of
        ``nn.MultiheadAttention``, whose forward reads its weight directly), ``conv1x1``
        (``nn.Conv{1,2,3}d`` with all kernel sizes 1) and ``spectral`` (neuraloperator
        ``SpectralConv`` with dense, non-separable weights).
    """
    targets = tuple(targets)
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown or not targets:
        raise ValueError(f"LoRA targets {list(targets)}: choose among {', '.join(TARGETS)}")
    for p in module.parameters():
        p.requires_grad_(False)
    adapted = []
    for name, child in list(module.named_modules()):
        if isinstance(child, nn.MultiheadAttention):  # its forward reads out_proj.weight itself
            continue
        for attr, sub in list(child.named_children()):
            full = f"{name}.{attr}" if name else attr
            if any(s in full for s in skip):
                continue
            if "linear" in targets and isinstance(sub, nn.Linear):
                wrapped = LoRALinear(sub, rank, alpha)
            elif "conv1x1" in targets and _is_conv1x1(sub):
                wrapped = LoRAConv1x1(sub, rank, alpha)
            elif "spectral" in targets and _is_spectral(child, attr):
                if child.separable or not isinstance(getattr(sub, "tensor", None), torch.Tensor):
                    raise ValueError(f"spectral LoRA needs a dense, non-separable spectral weight; {full} is "
                                     f"{'separable' if child.separable else type(sub).__name__}: drop 'spectral' "
                                     "from the targets")
                wrapped = LoRASpectralWeight(sub, rank, alpha)
            else:
                continue
            setattr(child, attr, wrapped)
            adapted.append(full)
    if not adapted:
        raise ValueError(f"add_lora found no layer of the kinds {', '.join(targets)} to adapt")
    return adapted


def lora_layers(module: nn.Module) -> list[LoRALinear]:
    """Every :class:`LoRALinear` in ``module`` whose factors are trainable (AdaPreLoRA's layers;
    the convolution and spectral adapters are left to its AdamW part)."""
    return [m for m in module.modules() if isinstance(m, LoRALinear) and m.lora_A.requires_grad]
