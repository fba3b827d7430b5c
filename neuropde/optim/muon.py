"""Muon for the parameters ``torch.optim.Muon`` refuses, and the ``optimizer=muon`` factory.

``torch.optim.Muon`` takes real 2-D matrices only. Neural operators also have convolution kernels
(out, in, *k) — treated here as (out, in·k) matrices — and complex Fourier weights
(C_in, C_out, *modes) — one complex C_in×C_out matrix per mode, orthogonalised together by the
batched complex Newton–Schulz iteration. The update is Muon's (reference notes, optimizers.md
2.1): EMA momentum with Nesterov, approximate polar factor, shape-dependent scale, decoupled
weight decay with the unscaled learning rate.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim import Optimizer

from neuropde.optim.combined import CombinedOptimizer
from neuropde.optim.factories import adamw_fallback
from neuropde.optim.grouping import route_parameters
from neuropde.optim.newton_schulz import newton_schulz, scale_factor
from neuropde.optim.symmetric import MAPS, symmetric_map


def _cosh_damping(x: torch.Tensor) -> torch.Tensor:
    """AuON's r = (mean cosh(x)²)^½ per matrix, over the last two axes (|x| for complex entries)."""
    # entries of a Frobenius-normalised matrix are ≤ 1 in magnitude: float32 cosh is exact enough
    return torch.cosh(x.abs()).pow(2).mean(dim=(-2, -1), keepdim=True).sqrt()


def clip_top_decile(M: torch.Tensor) -> torch.Tensor:
    """ROOT's outlier clipping: entries of each matrix (..., m, n) whose magnitude exceeds the 90 %
    quantile of |M| are shrunk to it (phase kept for complex entries)."""
    mag = M.abs().flatten(-2)
    k = max(1, int(round(0.9 * mag.shape[-1])))
    eps = mag.kthvalue(k, dim=-1).values[..., None, None] + 1e-9
    return M * torch.clamp(eps / (M.abs() + 1e-30), max=1.0)


def _per_matrix(update: torch.Tensor, rule: str, ns_steps: int, ns_dtype: torch.dtype = torch.bfloat16,
                coefficients: str = "muon") -> torch.Tensor:
    """The rule's map of a batch of momentum matrices (..., m, n), real or complex.

    muon: Newton–Schulz polar factor. auon: Frobenius-normalised, divided by AuON's cosh factor
    (≈ 1 in practice: reference notes 2.7). hybrid_auon: one (``ns_steps``) Newton–Schulz step on the
    normalised matrix, then the cosh factor. root: the entries above the 90 % quantile of |M| clipped
    to it, then the Newton–Schulz polar factor (ROOT, outlier-robust).
    """
    ns = dict(steps=ns_steps, dtype=ns_dtype, coefficients=coefficients)
    if rule == "muon":  # the result goes straight into the weights: keep the working dtype
        return newton_schulz(update, **ns, out_dtype=None if update.is_complex() else ns_dtype)
    if rule == "randomized":
        return randomized_polar(update, rank=ns_steps)
    if rule == "root":
        return newton_schulz(clip_top_decile(update), **ns, out_dtype=None if update.is_complex() else ns_dtype)
    x = update / (torch.linalg.matrix_norm(update)[..., None, None] + 1e-7)
    if rule == "hybrid_auon":
        x = newton_schulz(x, **ns)
    return x / (_cosh_damping(x) + 1e-8)


def randomized_polar(G: torch.Tensor, rank: int, oversample: int = 8) -> torch.Tensor:
    """Rank-``rank`` polar factor of a batch (..., m, n) from a randomized range finder.

    Y = G Ω with a Gaussian Ω (n × (rank + oversample)), Q = orth(Y), then the SVD of the small
    QᴴG = Û S Vᴴ gives Q Û[:, :rank] Vᴴ[:rank]: exact for matrices of rank ≤ ``rank``, and
    O(mn·rank) instead of Newton–Schulz's O(mn·min(m, n)) per step.
    """
    k = min(rank + oversample, G.shape[-1], G.shape[-2])
    omega = torch.randn(*G.shape[:-2], G.shape[-1], k, dtype=G.dtype, device=G.device)
    Q, _ = torch.linalg.qr(G @ omega)
    U, S, Vh = torch.linalg.svd(Q.mH @ G, full_matrices=False)
    r = min(rank, U.shape[-1])
    # directions with numerically zero singular values are not part of the polar factor
    tol = S[..., :1] * torch.finfo(S.dtype).eps * max(G.shape[-2:]) * 10
    keep = (S[..., :r] > tol).to(U.dtype)
    return Q @ (U[..., :r] * keep[..., None, :]) @ Vh[..., :r, :]


def _ns_dtype(name: str, device: torch.device) -> torch.dtype:
    """Newton–Schulz compute dtype: "bfloat16", "float32", or "auto" (bfloat16 on GPUs, float32 on CPUs)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in ("bfloat16", "float32", "float64"):
        raise ValueError(f"ns_dtype must be bfloat16, float32, float64 or auto, got {name!r}")
    return getattr(torch, name)


ADAMW_RMS = 0.2  # RMS of an AdamW update per unit lr, which "match_rms_adamw" gives every rule
# Rules whose map has no norm fixed by the matrix shape: one Newton–Schulz step on a
# Frobenius-normalised matrix scales its singular values by up to ≈ 3.4 (hybrid_auon), a rank-r
# polar factor has only r unit singular values (randomized), and the symmetric maps differ in norm
# (row-norm has ‖U‖_F = √m). A shape factor misses the target for these (measured update RMS / lr
# 0.68 and 0.035 before), so under "match_rms_adamw" their update is rescaled by its measured RMS.
MEASURED_RMS_RULES = ("hybrid_auon", "randomized") + MAPS


def match_rms(U: torch.Tensor, target: float = ADAMW_RMS) -> torch.Tensor:
    """Each matrix of (..., m, n), real or complex, rescaled to RMS ``target`` (zero stays zero)."""
    rms = U.abs().pow(2).mean(dim=(-2, -1), keepdim=True).sqrt()
    return U * (target / (rms + 1e-12))


def _rule_update(mats: torch.Tensor, group: dict) -> torch.Tensor:
    """The group's rule applied to a batch of momentum matrices (..., m, n), before the shape
    factor of :func:`_update_scale`."""
    rule = group["rule"]
    if rule in MAPS:
        U = symmetric_map(mats, rule, alpha=group.get("alpha", 0.0), center=group.get("center", False),
                          eps=group.get("eps", 1e-8))
    else:
        dtype = _ns_dtype(group.get("ns_dtype", "bfloat16"), mats.device)
        U = _per_matrix(mats, rule, group["ns_steps"], dtype, group.get("ns_coefficients", "muon"))
    if rule in MEASURED_RMS_RULES and group["adjust_lr_fn"] == "match_rms_adamw":
        U = match_rms(U)
    return U


def _update_scale(rule: str, rows: int, cols: int, convention: str) -> float:
    """Factor multiplying a rule's map of an m×n momentum matrix.

    Polar-factor rules (muon, root) use Muon's conventions (:func:`scale_factor`): under
    "match_rms_adamw", 0.2·√max(m, n) on min(m, n) singular values near 1 gives update RMS ≈ 0.2.
    AuON's map has unit Frobenius norm (RMS 1/√(mn)), so there "match_rms_adamw" is 0.2·√(mn).
    The rules of :data:`MEASURED_RMS_RULES` were already rescaled to RMS 0.2 by
    :func:`_rule_update`, and the symmetric maps under "none" keep the reference form: factor 1.
    Under "original", hybrid_auon and randomized keep their papers' √max(1, m/n).
    """
    if rule in MAPS or (rule in MEASURED_RMS_RULES and convention == "match_rms_adamw"):
        return 1.0
    if rule in ("auon", "hybrid_auon") and convention == "match_rms_adamw":
        return ADAMW_RMS * math.sqrt(rows * cols)
    return scale_factor(rows, cols, convention)


RULES = ("muon", "auon", "hybrid_auon", "root", "randomized") + MAPS


class MatrixMuon(Optimizer):
    """Orthogonalised-momentum rules on matrices, conv kernels (as matrices) and complex spectral
    weights (one complex matrix per mode).

    Parameters
    ----------
    params : real tensors with ndim ≥ 2 or complex tensors (C_in, C_out, *modes).
    lr, weight_decay, momentum, nesterov, ns_steps : as torch.optim.Muon.
    adjust_lr_fn : "original" (√max(1, m/n)) or "match_rms_adamw" (0.2·√max(m, n)).
    rule : "muon", "auon", "hybrid_auon", "root" or "randomized" (see :func:`_per_matrix`;
        for "randomized", ``ns_steps`` is the rank of the polar factor).
    ns_dtype : compute dtype of Newton–Schulz for real matrices: "bfloat16" (as torch.optim.Muon;
        measured 4× faster than float32 on the 2-core development CPU and the usual choice on GPUs)
        or "float32"; complex weights always use complex64.
    ns_coefficients : "muon" (the standard quintic) or "fitted" (per-shape coefficients from
        ``ns_coefficients.json``, as ROOT does; see :func:`~neuropde.optim.newton_schulz.coefficients_for`).
    """

    def __init__(self, params, lr: float = 1e-3, weight_decay: float = 0.1, momentum: float = 0.95,
                 nesterov: bool = True, ns_steps: int = 5, adjust_lr_fn: str = "match_rms_adamw",
                 rule: str = "muon", ns_dtype: str = "bfloat16", ns_coefficients: str = "muon"):
        if adjust_lr_fn not in ("original", "match_rms_adamw", "none"):
            raise ValueError(f"adjust_lr_fn must be 'original' or 'match_rms_adamw', got {adjust_lr_fn!r}")
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                        ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn, rule=rule, ns_dtype=ns_dtype,
                        ns_coefficients=ns_coefficients)
        super().__init__(params, defaults)

    @staticmethod
    def _as_matrices(p: torch.Tensor, update: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """The update as a batch of matrices (..., m, n), and the map's (fan-out, fan-in)."""
        if p.is_complex():
            # per-mode map x̂_out = Σ_i x̂_i W[i, o]: (*modes, C_in, C_out), fan-in C_in, fan-out C_out
            return update.movedim((0, 1), (-2, -1)), p.shape[1], p.shape[0]
        return update.reshape(p.shape[0], -1), p.shape[0], p[0].numel()

    @staticmethod
    def _back(p: torch.Tensor, ortho: torch.Tensor) -> torch.Tensor:
        return ortho.movedim((-2, -1), (0, 1)) if p.is_complex() else ortho.view_as(p)

    def _apply(self, p: torch.Tensor, ortho: torch.Tensor, rows: int, cols: int, group: dict) -> None:
        """Decoupled weight decay, then the scaled update."""
        p.mul_(1 - group["lr"] * group["weight_decay"])
        scale = _update_scale(group["rule"], rows, cols, group["adjust_lr_fn"])
        p.add_(self._back(p, ortho), alpha=-group["lr"] * scale)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            rule = group["rule"]
            # all matrices of one shape go through the rule in one batched call
            buckets: dict[tuple, list] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - group["momentum"])
                update = p.grad.lerp(buf, group["momentum"]) if group["nesterov"] else buf
                mats, rows, cols = self._as_matrices(p, update)
                if rule not in MAPS and mats.device.type == "cpu" and min(mats.shape[-2:]) >= 128:
                    # Newton–Schulz takes large CPU matrices one at a time anyway: finishing each
                    # parameter before the next keeps its update in cache (stacking them cost a copy,
                    # and holding all updates until the end 2x slower casts and lerps: 40 vs 37 ms
                    # against torch.optim.Muon's 37 ms for 8 matrices of 512² on 2 cores)
                    self._apply(p, _rule_update(mats, group), rows, cols, group)
                    continue
                key = (tuple(mats.shape), mats.dtype, mats.device)
                buckets.setdefault(key, []).append((p, mats, rows, cols))
            for items in buckets.values():
                mats = torch.stack([m for _, m, _, _ in items])
                orthos = _rule_update(mats, group).unbind(0)
                for (p, _, rows, cols), ortho in zip(items, orthos):
                    self._apply(p, ortho, rows, cols, group)
        return loss


def _assemble(routes: dict, rule: str, opts: dict, adamw: dict | None, spectral: str, torch_muon: bool,
              extra: dict | None = None) -> Optimizer:
    """The combined optimizer over routed parameters: ``rule`` on matrices and spectral weights
    (plain 2-D ones on ``torch.optim.Muon`` when ``torch_muon``), ``extra`` members as given, AdamW on
    the rest with the options in ``adamw`` (its lr defaults to the main lr)."""
    if spectral not in ("orthogonalize", "adamw"):
        raise ValueError(f"spectral must be 'orthogonalize' or 'adamw', got {spectral!r}")
    if spectral == "adamw":
        routes["adamw"] += routes.pop("spectral")
        routes["spectral"] = []
    matrices = [p for _, p in routes["matrix"]] + [p for _, p in routes["spectral"]]
    # torch.optim.Muon has one coefficient set for all shapes: per-shape ones need the project's path
    torch_muon = (torch_muon and opts.get("ns_coefficients", "muon") == "muon"
                  and opts.get("ns_dtype", "bfloat16") == "bfloat16")
    plain = [p for p in matrices if p.dim() == 2 and not p.is_complex()] if torch_muon else []
    shaped = [p for p in matrices if all(p is not q for q in plain)]
    members = {}
    if plain:
        own = ("ns_coefficients", "ns_dtype")  # options of the project's path only
        members["muon"] = torch.optim.Muon(plain, **{k: v for k, v in opts.items() if k not in own})
    if shaped:
        members[f"{rule}_matrix"] = MatrixMuon(shaped, rule=rule, **opts)
    members.update(extra or {})
    rest = [p for _, p in routes["adamw"]]
    if rest:
        members["adamw"] = adamw_fallback(rest, adamw, opts["lr"])
    return CombinedOptimizer(members)


def _combined(module: nn.Module, rule: str, lr: float, weight_decay: float, momentum: float, nesterov: bool,
              ns_steps: int, adjust_lr_fn: str, adamw: dict | None, torch_muon: bool,
              spectral: str = "orthogonalize",
        ns_coefficients: str = "muon", ns_dtype: str = "bfloat16") -> Optimizer:
    opts = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                adjust_lr_fn=adjust_lr_fn, ns_coefficients=ns_coefficients, ns_dtype=ns_dtype)
    return _assemble(route_parameters(module), rule, opts, adamw, spectral, torch_muon)


def auon(module: nn.Module, lr: float = 1e-3, weight_decay: float = 0.0, momentum: float = 0.95,
         nesterov: bool = True, adjust_lr_fn: str = "match_rms_adamw", adamw: dict | None = None,
         spectral: str = "orthogonalize") -> Optimizer:
    """``optimizer=auon``: AuON (Frobenius-normalised momentum with a cosh trust-region factor) on
    hidden matrices and spectral weights, AdamW on the rest. The factor is ≈ 1 for real layers, so
    this behaves as normalised-momentum SGD (reference notes 2.7). The paper's form is
    ``adjust_lr_fn="original", lr=0.24``; the default matches AdamW's update RMS instead."""
    return _combined(module, "auon", lr, weight_decay, momentum, nesterov, 0, adjust_lr_fn, adamw, False, spectral)


def hybrid_auon(module: nn.Module, lr: float = 1e-3, weight_decay: float = 0.0, momentum: float = 0.95,
                nesterov: bool = True, ns_steps: int = 1, adjust_lr_fn: str = "match_rms_adamw",
                adamw: dict | None = None, spectral: str = "orthogonalize",
        ns_coefficients: str = "muon", ns_dtype: str = "bfloat16") -> Optimizer:
    """``optimizer=hybrid_auon``: AuON with ``ns_steps`` (default 1, as in the paper) Newton–Schulz steps."""
    return _combined(module, "hybrid_auon", lr, weight_decay, momentum, nesterov, ns_steps, adjust_lr_fn, adamw,
                     False, spectral, ns_coefficients=ns_coefficients, ns_dtype=ns_dtype)


def root(module: nn.Module, lr: float = 1e-3, weight_decay: float = 0.1, momentum: float = 0.95,
         nesterov: bool = True, ns_steps: int = 5, adjust_lr_fn: str = "match_rms_adamw",
         adamw: dict | None = None, spectral: str = "orthogonalize",
        ns_coefficients: str = "muon", ns_dtype: str = "bfloat16") -> Optimizer:
    """``optimizer=root``: ROOT (momentum entries above the 90 % |M| quantile clipped, then
    Newton–Schulz) on hidden matrices and spectral weights, AdamW on the rest. ROOT's own
    shape-tuned table covers only 2048-wide matrices, so on our shapes it runs Muon's coefficients,
    as here by default; ``ns_coefficients="fitted"`` uses the project's table for our shapes."""
    return _combined(module, "root", lr, weight_decay, momentum, nesterov, ns_steps, adjust_lr_fn, adamw, False,
                     spectral, ns_coefficients=ns_coefficients, ns_dtype=ns_dtype)


def muon_randomized(module: nn.Module, lr: float = 1e-3, weight_decay: float = 0.1, momentum: float = 0.95,
                    nesterov: bool = True, rank: int = 8, adjust_lr_fn: str = "match_rms_adamw",
                    adamw: dict | None = None, spectral: str = "orthogonalize") -> Optimizer:
    """``optimizer=muon_randomized``: Muon with a randomized rank-``rank`` polar factor
    (:func:`randomized_polar`) instead of Newton–Schulz, on the same parameters as ``muon``."""
    return _combined(module, "randomized", lr, weight_decay, momentum, nesterov, rank, adjust_lr_fn, adamw, False,
                     spectral)


def muon(module: nn.Module, lr: float = 1e-3, weight_decay: float = 0.1, momentum: float = 0.95,
         nesterov: bool = True, ns_steps: int = 5, adjust_lr_fn: str = "match_rms_adamw",
         adamw: dict | None = None, spectral: str = "orthogonalize",
        ns_coefficients: str = "muon", ns_dtype: str = "bfloat16") -> Optimizer:
    """``optimizer=muon``: Muon on hidden matrices and spectral weights, AdamW on the rest.

    Real 2-D hidden weights use ``torch.optim.Muon``; conv kernels and complex spectral weights
    use :class:`MatrixMuon`; the rest (see :mod:`neuropde.optim.grouping`) uses AdamW with the
    options in ``adamw``. Returns a :class:`CombinedOptimizer` (one ``step``, one closure call).
    """
    return _combined(module, "muon", lr, weight_decay, momentum, nesterov, ns_steps, adjust_lr_fn, adamw, True,
                     spectral, ns_coefficients=ns_coefficients, ns_dtype=ns_dtype)
