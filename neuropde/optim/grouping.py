"""Which parameter gets which update rule, decided once and shown to the user.

Rules (reference notes, optimizers.md section 2.5):

- ``matrix``: real hidden weights. Exactly 2-D ones go to ``torch.optim.Muon``; convolution kernels
  (out, in, *k) — 1×1 kernels included — are treated as (out, in·k) matrices by the project's Muon.
- ``spectral``: complex Fourier-layer weights (C_in, C_out, *modes): one complex C_in×C_out
  matrix per mode, orthogonalised by the project's complex Newton–Schulz.
- ``adamw``: everything else — biases, norms, vectors, matrices with a side < 2 (their polar
  factor is only the normalised gradient), tensors that are not maps (latent tokens, basis
  coefficients), and the layers that touch the data (lifting, projection, reduction,
  embeddings, heads, output operators).
"""
from __future__ import annotations

from torch import nn

DATA_FACING = ("lift", "projection", "reduction", "embed", "head", "output_operator", "norm")
# tensors that are not linear maps between feature spaces (LSM's latent tokens and basis-operator
# coefficients): their "matrix" shape has no polar factor worth taking
NOT_MAPS = ("token", "coefficient", "basis")


def rule_for(name: str, p) -> str:
    """Update rule of one parameter: ``matrix``, ``spectral`` or ``adamw``."""
    if p.is_complex():
        # weights (C_in, C_out, *modes); per-mode biases (*modes) carry no channel matrix
        is_weight = name.endswith("weight") or name.endswith("weight.tensor")
        return "spectral" if is_weight and p.dim() >= 3 and min(p.shape[0], p.shape[1]) >= 2 else "adamw"
    if p.dim() < 2 or min(p.shape[0], p[0].numel()) < 2:
        return "adamw"
    parts = name.lower().split(".")
    if any(key in part for part in parts for key in NOT_MAPS):
        return "adamw"
    if any(key in part for part in parts for key in DATA_FACING):
        # the lifting operator of SFNO holds a hidden spectral layer (handled above); its real
        # matrices touch the encoded input and stay on AdamW
        return "adamw"
    return "matrix"


def route_parameters(module: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Trainable parameters by rule: ``{"matrix": [(name, p), ...], "spectral": [...], "adamw": [...]}``."""
    routes = {"matrix": [], "spectral": [], "adamw": []}
    for name, p in module.named_parameters():
        if p.requires_grad:
            routes[rule_for(name, p)].append((name, p))
    return routes


def describe(routes: dict[str, list]) -> str:
    """A table of every parameter, its shape and its rule (written to ``param_groups.txt``)."""
    lines = [f"{'rule':9s} {'shape':24s} name"]
    for rule, items in routes.items():
        for name, p in items:
            shape = "x".join(map(str, p.shape)) + (" complex" if p.is_complex() else "")
            lines.append(f"{rule:9s} {shape:24s} {name}")
    counts = ", ".join(f"{r}: {sum(p.numel() for _, p in items):,} in {len(items)} tensors"
                       for r, items in routes.items())
    return "\n".join(lines + ["", counts])


def describe_optimizer(module: nn.Module, optimizer) -> str:
    """A table of every trainable parameter, its shape and the rule the built ``optimizer`` applies:
    ``member/rule`` for a combined optimizer (e.g. ``muon``, ``muon_matrix/muon``,
    ``symmetric/rownorm``, ``adamw``), the optimizer's class for a plain one."""
    members = getattr(optimizer, "optimizers", {type(optimizer).__name__: optimizer})
    rule_of = {}
    for member, opt in members.items():
        for group in opt.param_groups:
            label = member if "rule" not in group or member.startswith(group["rule"]) else f"{member}/{group['rule']}"
            for p in group["params"]:
                rule_of[id(p)] = label
    rows = [(rule_of.get(id(p), "frozen"), name, p) for name, p in module.named_parameters() if p.requires_grad]
    width = max([len(r) for r, _, _ in rows] + [4])
    lines = [f"{'rule':{width}s} {'shape':24s} name"]
    for rule, name, p in sorted(rows, key=lambda r: r[0]):
        shape = "x".join(map(str, p.shape)) + (" complex" if p.is_complex() else "")
        lines.append(f"{rule:{width}s} {shape:24s} {name}")
    totals: dict[str, list] = {}
    for rule, _, p in rows:
        totals.setdefault(rule, []).append(p.numel())
    counts = ", ".join(f"{r}: {sum(n):,} in {len(n)} tensors" for r, n in sorted(totals.items()))
    return "\n".join(lines + ["", counts])
