"""Every orthogonalised rule's update has AdamW's RMS under ``adjust_lr_fn=match_rms_adamw``.

The promise of the optimizer configs is that one learning rate serves every rule: the RMS of the
actual parameter change of a step, divided by lr, is ≈ 0.2 (AdamW's) whatever the rule, the
aspect ratio, the kind of weight (matrix, conv kernel, complex per-mode spectral weight) and the
gradient's spectrum. Measured here from a fresh state, weight decay 0, through the factories that
``optimizer=<name>`` builds.
"""
import math

import pytest
import torch
from torch import nn

from neuropde.optim import muon as muon_module
from neuropde.optim.symmetric import symmetric

pytestmark = pytest.mark.usefixtures("one_thread")

FACTORIES = {name: getattr(muon_module, name) for name in ("muon", "auon", "hybrid_auon", "root", "muon_randomized")}
FACTORIES["symmetric"] = symmetric


class Holder(nn.Module):
    """One weight under a name that routes it: ``hidden`` (orthogonalised), ``lift`` (embedding), ``head``."""

    def __init__(self, role: str, weight: torch.Tensor):
        super().__init__()
        setattr(self, role, nn.ParameterDict({"weight": nn.Parameter(weight)}))
        self.role = role

    @property
    def weight(self) -> nn.Parameter:
        return getattr(self, self.role)["weight"]


KINDS = {  # name -> (role, weight shape, complex)
    "square": ("hidden", (256, 256), False),
    "wide_1to4": ("hidden", (96, 384), False),
    "tall_4to1": ("hidden", (384, 96), False),
    "linear_384x256": ("hidden", (384, 256), False),
    "conv_kernel": ("hidden", (64, 32, 3, 3), False),
    "spectral_modes": ("hidden", (24, 24, 8, 5), True),
}


def _gradient(shape, is_complex, spectrum: str, gen: torch.Generator) -> torch.Tensor:
    """Gaussian, or rank 4 plus 1 % noise (real gradients are often dominated by a few directions)."""
    dtype = torch.cfloat if is_complex else torch.float32
    g = torch.randn(shape, generator=gen, dtype=dtype)
    if spectrum == "low_rank":
        m = shape[0]
        flat = g.reshape(m, -1)
        u = torch.randn(m, 4, generator=gen, dtype=dtype)
        v = torch.randn(4, flat.shape[1], generator=gen, dtype=dtype)
        g = (u @ v + 0.01 * flat).reshape(shape)
    return g


def update_rms_per_lr(name: str, role: str, shape, is_complex: bool, spectrum: str = "gaussian",
                      adjust_lr_fn: str = "match_rms_adamw", lr: float = 1e-2) -> float:
    """RMS (|·| for complex entries) of the change of the weight after one step, divided by lr."""
    gen = torch.Generator().manual_seed(0)
    dtype = torch.cfloat if is_complex else torch.float32
    holder = Holder(role, torch.randn(shape, generator=gen, dtype=dtype))
    opt = FACTORIES[name](holder, lr=lr, weight_decay=0.0, adjust_lr_fn=adjust_lr_fn)
    before = holder.weight.detach().clone()
    holder.weight.grad = _gradient(shape, is_complex, spectrum, gen)
    opt.step()
    delta = holder.weight.detach() - before
    return delta.abs().pow(2).mean().sqrt().item() / lr


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("name", list(FACTORIES))
def test_update_rms_matches_adamw(name, kind):
    role, shape, is_complex = KINDS[kind]
    # Newton–Schulz lifts only singular values that are not tiny against the largest: on a rank-4
    # momentum, Muon's (and torch.optim.Muon's) update has ~4 unit singular values and RMS ≈
    # 0.2·√(4/min(m, n)) by design. The rules normalised by norm (AuON) or by measured RMS match
    # AdamW on any spectrum.
    spectra = ("gaussian",) if name in ("muon", "root", "symmetric") else ("gaussian", "low_rank")
    for spectrum in spectra:
        ratio = update_rms_per_lr(name, role, shape, is_complex, spectrum)
        assert 0.15 <= ratio <= 0.25, (name, kind, spectrum, ratio)


@pytest.mark.parametrize("role", ["lift", "head"])
def test_symmetric_data_facing_maps_match_adamw(role):
    # the embedding (right one-sided spectral) and head (row-norm) maps of optimizer=symmetric
    for shape in ((64, 3), (4, 64)):
        for spectrum in ("gaussian", "low_rank"):
            ratio = update_rms_per_lr("symmetric", role, shape, False, spectrum)
            assert 0.15 <= ratio <= 0.25, (role, shape, spectrum, ratio)


@pytest.mark.parametrize("name", ["hybrid_auon", "muon_randomized"])
def test_original_scaling_is_the_papers(name):
    """``adjust_lr_fn=original``: the rule's own map times √max(1, m/n), no RMS matching."""
    rule = {"hybrid_auon": "hybrid_auon", "muon_randomized": "randomized"}[name]
    steps = {"hybrid_auon": 1, "muon_randomized": 8}[name]
    m, n = 384, 96
    gen = torch.Generator().manual_seed(0)
    torch.randn((m, n), generator=gen)  # the holder's initial weight
    g = _gradient((m, n), False, "gaussian", gen)
    torch.manual_seed(0)
    ratio = update_rms_per_lr(name, "hidden", (m, n), False, adjust_lr_fn="original")
    torch.manual_seed(0)
    expected_map = muon_module._per_matrix(g, rule, steps, torch.bfloat16)
    expected = math.sqrt(m / n) * expected_map.float().pow(2).mean().sqrt().item()
    assert ratio == pytest.approx(expected, rel=0.02)
    # and that is far from AdamW's RMS: the papers' forms need their own learning rates
    assert not 0.15 <= ratio <= 0.25
