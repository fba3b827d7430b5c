"""The 1-D PDE families of the ``multi1d`` data set: multi-operator pretraining (LeMON, arXiv
2408.16168) learns many operators at once, one operator being one family with one set of
coefficients, each applied to many initial conditions.

:data:`FAMILIES` maps a family name to a :class:`FamilySpec`: its equation, coefficient names with
nominal values, domain length, solver step, frame spacing and initial-condition sampler. Every
family lives on a periodic ``[0, L)`` with ``x_i = i L / n`` and is integrated in float64 by a
batched spectral solver: ETDRK4 for the first-order semilinear ones (:mod:`.semilinear1d` and the
KdV / Kuramoto–Sivashinsky classes of :mod:`.etdrk4`), an exact or symplectic split propagator
for the second-order ones (:mod:`.wave1d`). :func:`simulate_family` is the one entry point;
:func:`sample_coefficients` draws an operator, :func:`initial_condition` its inputs.

Nominal coefficients and frame spacings are chosen so that at 128 points and 64 frames every
family changes visibly over the horizon while staying resolved (see ``tests/test_multi1d.py``).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch

from neuropde.pde.burgers import Burgers1D
from neuropde.pde.etdrk4 import (
    KortewegDeVries,
    KuramotoSivashinsky,
    kdv_initial_condition,
    ks_initial_condition,
)
from neuropde.pde.semilinear1d import Advection1D, AllenCahn1D, CahnHilliard1D, FisherKPP1D, Heat1D
from neuropde.pde.wave1d import KleinGordon1D, SineGordon1D, Wave1D

__all__ = [
    "FAMILIES", "FamilySpec", "HyperviscousKS", "get_family", "initial_condition",
    "random_fourier_field", "sample_coefficients", "simulate_family",
]


class HyperviscousKS(KuramotoSivashinsky):
    """Kuramoto–Sivashinsky ``u_t + u u_x + u_xx + ν u_xxxx = 0``: the class of
    :mod:`.etdrk4` (``ν = 1``) with ``ν`` as the family's coefficient (symbol ``k² − ν k⁴``)."""

    def __init__(self, n: int, L: float, nu: float = 1.0, dtype=torch.float64, device="cpu"):
        super().__init__(n, L, dtype=dtype, device=device)
        self.nu = float(nu)

    def linear_symbol(self, k: torch.Tensor) -> torch.Tensor:
        return (k ** 2 - self.nu * k ** 4).to(torch.complex128)


# --- initial conditions ----------------------------------------------------------------------------
# Samplers take (batch, n, L, generator) and return float64 (batch, n) on CPU, drawn on CPU from
# the generator, so that a seed gives the same fields on any machine.
def random_fourier_field(batch: int, n: int, L: float, k_max: int,
                         generator: torch.Generator | None = None, decay: float = 1.0) -> torch.Tensor:
    """Zero-mean random Fourier series with unit root-mean-square.

    ``u(x) ∝ Σ_{j=1}^{k_max} j^{−decay} [a_j cos(2πjx/L) + b_j sin(2πjx/L)]``, ``a_j, b_j``
    standard normal, scaled per sample to RMS 1 over the grid.

    Parameters
    ----------
    batch, n, L : number of fields, grid points, domain length.
    k_max : highest integer wavenumber, below ``n/2``.
    generator : CPU ``torch.Generator``.
    decay : power-law decay of the amplitudes with the wavenumber.

    Returns
    -------
    Tensor (batch, n), float64.
    """
    if not 1 <= k_max < n / 2:
        raise ValueError(f"k_max must be between 1 and {(n - 1) // 2} to be resolved on n={n} points, "
                         f"got {k_max}; lower k_max or raise n")
    ab = torch.randn(batch, 2, k_max, generator=generator, dtype=torch.float64)
    j = torch.arange(1, k_max + 1, dtype=torch.float64)
    ab = ab * j ** -decay
    phase = (2 * math.pi / L) * (torch.arange(n, dtype=torch.float64) * (L / n))[:, None] * j
    u = ab[:, 0] @ torch.cos(phase).T + ab[:, 1] @ torch.sin(phase).T
    return u / u.pow(2).mean(-1, keepdim=True).sqrt()


def _uniform(batch: int, lo: float, hi: float, generator) -> torch.Tensor:
    """(batch, 1) uniform in [lo, hi)."""
    return lo + (hi - lo) * torch.rand(batch, 1, generator=generator, dtype=torch.float64)


def _unit_range_field(batch, n, L, generator):
    # min–max normalised to [0, 1] like LeMON's initial conditions, but with modes up to 6 (LeMON:
    # 1–2) so that the heat equation has something to smooth; the extremes are taken on the grid
    u = random_fourier_field(batch, n, L, 6, generator)
    lo, hi = u.amin(-1, keepdim=True), u.amax(-1, keepdim=True)
    return (u - lo) / (hi - lo)


def _positive_bumps(batch, n, L, generator, max_bumps: int = 3):
    """Smooth periodic bumps in [0, 1] (Fisher–KPP): ``1 − Π_i (1 − h_i b_i(x))`` stays in [0, 1]
    however the bumps overlap. ``b_i = exp(κ_i (cos(2π(x − x_i)/L) − 1))`` is periodic and smooth;
    ``κ = (L / 2πσ)²`` gives it a width ``σ`` near the peak, drawn in [0.03, 0.08] L."""
    x = torch.arange(n, dtype=torch.float64) * (L / n)
    count = torch.randint(1, max_bumps + 1, (batch, 1), generator=generator)
    centre = L * torch.rand(batch, max_bumps, generator=generator, dtype=torch.float64)
    height = 0.2 + 0.8 * torch.rand(batch, max_bumps, generator=generator, dtype=torch.float64)
    width = L * (0.03 + 0.05 * torch.rand(batch, max_bumps, generator=generator, dtype=torch.float64))
    height = height * (torch.arange(max_bumps) < count)  # unused bumps get height 0
    kappa = (L / (2 * math.pi * width)) ** 2
    bumps = torch.exp(kappa[..., None] * (torch.cos((2 * math.pi / L) * (x - centre[..., None])) - 1))
    return 1 - (1 - height[..., None] * bumps).prod(1)


def _small_field(batch, n, L, generator):
    # near the unstable state u = 0, so the phases ±1 form from the data's own fluctuations
    return _uniform(batch, 0.05, 0.2, generator) * random_fourier_field(batch, n, L, 8, generator)


def _small_field_with_mean(batch, n, L, generator):
    # Cahn–Hilliard conserves the mean, which sets the phase fractions: draw it too
    mean = _uniform(batch, -0.3, 0.3, generator)
    return mean + _uniform(batch, 0.05, 0.2, generator) * random_fourier_field(batch, n, L, 8, generator)


def _zero_mean_field(lo: float, hi: float):
    def sample(batch, n, L, generator):
        u = random_fourier_field(batch, n, L, 6, generator)
        return _uniform(batch, lo, hi, generator) * u / u.abs().amax(-1, keepdim=True)
    return sample


def _kdv_field(batch, n, L, generator):
    return kdv_initial_condition(batch, n, L, generator=generator)


def _ks_field(batch, n, L, generator):
    # wavenumbers up to 2π·8/32 ≈ 1.6 cover the unstable band k < 1/√ν, which grows into chaos
    return ks_initial_condition(batch, n, L, k_max=8, amplitude=1.0, generator=generator)


# --- registry --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FamilySpec:
    """One PDE family of ``multi1d``.

    Attributes
    ----------
    name : registry key.
    equation : the PDE in text, with the coefficient names as in ``nominal``.
    nominal : coefficient name -> nominal value (read-only).
    L : domain length.
    dt : largest solver step (linear families are exact for any step: there ``dt = frame_dt``).
    frame_dt : default time between recorded frames.
    initial_condition : ``(batch, n, L, generator) -> Tensor (batch, n)`` float64 on CPU.
    solver : ``(coefficients, n, L, dtype=, device=) -> solver``, which has
        ``simulate(u0, dt, times)`` (first order) or ``simulate(u0, v0, dt, times)`` (second order).
    second_order : True when the state is ``(u, u_t)``.
    """

    name: str
    equation: str
    nominal: Mapping[str, float]
    L: float
    dt: float
    frame_dt: float
    initial_condition: Callable[..., torch.Tensor]
    solver: Callable[..., object]
    second_order: bool = False

    def check_coefficients(self, coefficients: Mapping[str, float]) -> dict[str, float]:
        """Coefficients as plain floats, in the registry's order; ValueError naming the fix."""
        names = set(self.nominal)
        given = set(coefficients)
        if given != names:
            raise ValueError(f"family {self.name!r} takes coefficients {sorted(names)}, got "
                             f"{sorted(given)} (missing {sorted(names - given)}, unknown "
                             f"{sorted(given - names)}); start from sample_coefficients({self.name!r}, 0.0) "
                             f"or FAMILIES[{self.name!r}].nominal")
        out = {key: float(coefficients[key]) for key in self.nominal}
        bad = {key: value for key, value in out.items() if not (value > 0 and math.isfinite(value))}
        if bad:
            raise ValueError(f"family {self.name!r}: coefficients must be positive and finite, got {bad}")
        return out


def _spec(name, equation, nominal, *, L, dt, frame_dt, initial_condition, solver, second_order=False):
    return FamilySpec(name, equation, MappingProxyType(dict(nominal)), float(L), float(dt), float(frame_dt),
                      initial_condition, solver, second_order)


# Frames span T = 63 frame_dt. Linear families are exact at any step, so there dt = frame_dt. The
# comments give the scales behind each choice; measured over 64 initial conditions at coefficients
# ±30% off nominal, 128 points agree with 256 to ≤ 4e-6 (KdV: 6e-3 at the smallest δ) and halving
# dt changes the result by ≤ 2e-5 (relative L2 over the trajectories).
FAMILIES: dict[str, FamilySpec] = {spec.name: spec for spec in [
    # mode j decays by e^{−κ (πj)² T}: 0.78 for j = 1, 1e-4 for j = 6 (T = 1.26)
    _spec("heat", "u_t = kappa u_xx", {"kappa": 0.02}, L=2.0, dt=0.02, frame_dt=0.02,
          initial_condition=_unit_range_field,
          solver=lambda q, n, L, **kw: Heat1D(n, L, q["kappa"], **kw)),
    # LeMON's c; the field travels 1.26, 63% of the domain
    _spec("advection", "u_t + c u_x = 0", {"c": 0.5}, L=2.0, dt=0.04, frame_dt=0.04,
          initial_condition=_unit_range_field,
          solver=lambda q, n, L, **kw: Advection1D(n, L, q["c"], **kw)),
    # LeMON's D: fronts √(D/r) = 0.055 wide move at 2√(Dr) = 0.11 for T = 5 growth times 1/r
    _spec("fisher_kpp", "u_t = D u_xx + r u (1 - u)", {"D": 0.003, "r": 1.0}, L=2.0, dt=0.02,
          frame_dt=0.08, initial_condition=_positive_bumps,
          solver=lambda q, n, L, **kw: FisherKPP1D(n, L, q["D"], q["r"], **kw)),
    # fronts √2 ε = 0.042 wide; T = 3.15 covers growth from the small field (rate 1) and front
    # formation, with the fronts still moving at the end
    _spec("allen_cahn", "u_t = eps^2 u_xx + u - u^3", {"eps": 0.03}, L=2.0, dt=0.025, frame_dt=0.05,
          initial_condition=_small_field,
          solver=lambda q, n, L, **kw: AllenCahn1D(n, L, q["eps"], **kw)),
    # fastest-growing wavelength 2π√(2γ) = 0.44, growth rate 1/(4γ) = 100: T = 0.126 covers the
    # spinodal decomposition and early coarsening. The stiff ∂x²(u³) in 𝓝 limits dt (1e-3 can
    # blow up at γ = 1e-3)
    _spec("cahn_hilliard", "u_t = (u^3 - u - gamma u_xx)_xx", {"gamma": 2.5e-3}, L=2.0, dt=5e-4,
          frame_dt=0.002, initial_condition=_small_field_with_mean,
          solver=lambda q, n, L, **kw: CahnHilliard1D(n, L, q["gamma"], **kw)),
    # LeMON's c: each half of the released field travels 1.26
    _spec("wave", "u_tt = c^2 u_xx", {"c": 0.5}, L=2.0, dt=0.04, frame_dt=0.04,
          initial_condition=_unit_range_field,
          solver=lambda q, n, L, **kw: Wave1D(n, L, q["c"], **kw), second_order=True),
    # m² = 4 is comparable to c² k² = 2.5 of the longest wave, so the dispersion differs from the
    # wave's visibly (LeMON's m² c⁴ = 0.01 barely does)
    _spec("klein_gordon", "u_tt = c^2 u_xx - m^2 u", {"c": 0.5, "m": 2.0}, L=2.0, dt=0.04, frame_dt=0.04,
          initial_condition=_zero_mean_field(0.5, 1.0),
          solver=lambda q, n, L, **kw: KleinGordon1D(n, L, q["c"], q["m"], **kw), second_order=True),
    # amplitudes 1–3 keep sin u far from linear; T = 5.04 is ~1.5 periods of the longest wave
    _spec("sine_gordon", "u_tt = c^2 u_xx - sin(u)", {"c": 0.5}, L=2.0, dt=0.02, frame_dt=0.08,
          initial_condition=_zero_mean_field(1.0, 3.0),
          solver=lambda q, n, L, **kw: SineGordon1D(n, L, q["c"], **kw), second_order=True),
    # Zabusky–Kruskal: solitons emerge from the sinusoids by T ≈ 1
    _spec("kdv", "u_t + u u_x + delta^2 u_xxx = 0", {"delta": 0.022}, L=2.0, dt=1e-3, frame_dt=0.016,
          initial_condition=_kdv_field,
          solver=lambda q, n, L, **kw: KortewegDeVries(n, L, q["delta"], **kw)),
    # viscous Burgers (LeMON's u_t + (u²/2)_x = (ε/π)u_xx with ν = ε/π): ν = 0.05 keeps the fronts of
    # unit-range fields resolved at 128 points (LeMON's ε = 0.01, ν = 0.003, would need ~2,000)
    _spec("burgers", "u_t + u u_x = nu u_xx", {"nu": 0.05}, L=2.0, dt=0.005, frame_dt=0.02,
          initial_condition=_unit_range_field,
          solver=lambda q, n, L, **kw: Burgers1D(n, L, q["nu"], **kw)),
    # grid spacing 0.25 as the ks_64 data set; T = 31.5 from the long-wave start into chaos
    _spec("ks", "u_t + u u_x + u_xx + nu u_xxxx = 0", {"nu": 1.0}, L=32.0, dt=0.025, frame_dt=0.5,
          initial_condition=_ks_field,
          solver=lambda q, n, L, **kw: HyperviscousKS(n, L, q["nu"], **kw)),
]}


def get_family(name: str) -> FamilySpec:
    """The :class:`FamilySpec` of ``name``; ValueError listing the known families otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown family {name!r}; choose one of {sorted(FAMILIES)}") from None


# --- entry points ----------------------------------------------------------------------------------
def sample_coefficients(name: str, spread: float = 0.1,
                        generator: torch.Generator | None = None) -> dict[str, float]:
    """Draw one operator: each coefficient uniform in ``[(1 − spread) q, (1 + spread) q]``.

    Parameters
    ----------
    name : family.
    spread : relative half-width in [0, 1): 0.1 in distribution, 0.3 out of distribution, 0 gives
        the nominal coefficients.
    generator : CPU ``torch.Generator``; one uniform number per coefficient, in registry order.

    Returns
    -------
    dict coefficient name -> value.
    """
    spec = get_family(name)
    if not 0 <= spread < 1:
        raise ValueError(f"spread must be in [0, 1) so that coefficients stay positive, got {spread}; "
                         f"use 0.1 (in distribution) or 0.3 (out of distribution)")
    draws = torch.rand(len(spec.nominal), generator=generator, dtype=torch.float64).tolist()
    return {key: q * (1 + spread * (2 * d - 1)) for (key, q), d in zip(spec.nominal.items(), draws)}


def initial_condition(name: str, batch: int, n: int = 128,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Random initial fields suited to the family (see the samplers above): Tensor (batch, n) float64."""
    spec = get_family(name)
    return spec.initial_condition(batch, n, spec.L, generator)


def simulate_family(name: str, coefficients: Mapping[str, float], u0: torch.Tensor, n_frames: int = 64,
                    frame_dt: float | None = None, generator: torch.Generator | None = None, *,
                    dt: float | None = None, v0: torch.Tensor | None = None,
                    dtype=torch.float64) -> torch.Tensor:
    """Trajectories of one operator (a family with fixed coefficients) from a batch of fields.

    Parameters
    ----------
    name : family (a key of :data:`FAMILIES`).
    coefficients : exactly the family's coefficient names -> positive values.
    u0 : Tensor (B, n), initial fields on ``x_i = i L / n`` with the family's L; its device is used.
    n_frames : frames to record at ``t = 0, frame_dt, …, (n_frames − 1) frame_dt``.
    frame_dt : time between frames; the family's default when None.
    generator : unused: every family here is deterministic given ``u0`` (accepted so that
        stochastic families can share the signature).
    dt : largest solver step (the family's when None); the step used is the largest one not above
        it that divides frame_dt.
    v0 : Tensor (B, n), initial ``u_t`` of a second-order family. None starts at rest, so that
        ``u0`` alone determines the trajectory (LeMON's input is the initial field only).
    dtype : float64 or float32, the solver's precision.

    Returns
    -------
    Tensor (B, n_frames, n) in ``dtype``, on ``u0``'s device; frame 0 is ``u0``.
    """
    spec = get_family(name)
    q = spec.check_coefficients(coefficients)
    if u0.dim() != 2 or u0.shape[-1] < 4:
        raise ValueError(f"u0 must be a batch of fields (B, n) with n >= 4, got shape {tuple(u0.shape)}; "
                         f"use u0[None] for a single field")
    if v0 is not None and not spec.second_order:
        raise ValueError(f"v0 is the initial u_t of a second-order family; {name!r} is first order in "
                         f"time, so leave v0=None")
    if n_frames < 1:
        raise ValueError(f"n_frames must be at least 1, got {n_frames}")
    frame_dt = spec.frame_dt if frame_dt is None else float(frame_dt)
    max_dt = spec.dt if dt is None else float(dt)
    if not (frame_dt > 0 and max_dt > 0 and math.isfinite(frame_dt) and math.isfinite(max_dt)):
        raise ValueError(f"frame_dt and dt must be positive and finite, got {frame_dt} and {max_dt}")
    # the largest step <= max_dt that divides frame_dt (1e-9 absorbs 0.08 / 0.02 = 4.000000000000001)
    step = frame_dt / math.ceil(frame_dt / max_dt - 1e-9)
    times = [i * frame_dt for i in range(n_frames)]
    solver = spec.solver(q, u0.shape[-1], spec.L, dtype=dtype, device=u0.device)
    if spec.second_order:
        return solver.simulate(u0, v0, step, times)
    return solver.simulate(u0, step, times)
