"""Fit Newton–Schulz coefficients per matrix shape, as ROOT does for its transformer shapes.

    python experiments/optimizers/fit_ns_coefficients.py   # -> neuropde/optim/ns_coefficients.json

The quintic iteration acts on each singular value alone: after Frobenius normalisation,
σ ↦ aσ + bσ³ + cσ⁵ five times. Its error against the exact polar factor is
‖NS₅(X) − UVᵀ‖²_F = Σᵢ (p⁵(σᵢ) − 1)², so the fit needs only singular-value spectra, not matrices.
For every (min side, max side) bucket our models use (per-mode spectral weights of width 12–64,
1×1 kernels of width × 4·width, PINN hidden layers up to 512) it samples normalised spectra of
two kinds, Gaussian matrices of that shape and power-law spectra σᵢ ∝ i^{-γ} (γ ∈ [0.5, 1.5],
like the momenta of trained layers); fits (a, b, c) from Muon's coefficients by Nelder–Mead on
the mean squared error per singular value; and reports the error of both on fresh spectra.
A bucket keeps Muon's coefficients unless the fit lowers the summed held-out error.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from neuropde.data.store import atomic_write_json
from neuropde.optim.newton_schulz import MUON_COEFFICIENTS

TABLE = Path(__file__).resolve().parents[2] / "neuropde" / "optim" / "ns_coefficients.json"
KINDS = ("gaussian", "power")
SHAPES = [(12, 12), (12, 48), (20, 20), (20, 80), (32, 32), (32, 128), (64, 64), (64, 256),
          (128, 128), (128, 512), (256, 256), (512, 512)]


def sample_spectra(m: int, n: int, count: int, kind: str, generator: torch.Generator) -> torch.Tensor:
    """``count`` unit-norm singular-value spectra (count, min(m, n)), float64.

    kind "gaussian": of Gaussian m×n matrices; "power": σᵢ ∝ i^{-γ}, γ uniform in [0.5, 1.5]
    (momenta of trained layers have decaying spectra).
    """
    k = min(m, n)
    if kind == "gaussian":
        spectra = torch.linalg.svdvals(torch.randn(count, m, n, generator=generator, dtype=torch.float64))
    elif kind == "power":
        gamma = 0.5 + torch.rand(count, 1, generator=generator, dtype=torch.float64)
        spectra = torch.arange(1, k + 1, dtype=torch.float64)[None].pow(-gamma)
    else:
        raise ValueError(kind)
    return spectra / spectra.norm(dim=1, keepdim=True)


def iterate(sigma: torch.Tensor, coefficients, steps: int = 5) -> torch.Tensor:
    a, b, c = (float(v) for v in coefficients)
    for _ in range(steps):
        sigma = a * sigma + b * sigma ** 3 + c * sigma ** 5
    return sigma


def error(sigma: torch.Tensor, coefficients, steps: int = 5) -> float:
    """Mean over spectra of ‖NS(X) − UVᵀ‖²_F / min(m, n)."""
    return (iterate(sigma, coefficients, steps) - 1).pow(2).mean().item()


def fit(sigma: torch.Tensor, steps: int = 5) -> tuple[float, float, float]:
    """Nelder–Mead from Muon's coefficients (the 5-fold composition is too rugged for gradients)."""
    from scipy.optimize import minimize

    res = minimize(lambda c: error(sigma, c, steps), MUON_COEFFICIENTS, method="Nelder-Mead",
                   options={"maxiter": 2000, "xatol": 1e-5, "fatol": 1e-10})
    return tuple(round(float(v), 4) for v in res.x)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=64, help="spectra per kind and shape for the fit (as many held out)")
    p.add_argument("--out", default=str(TABLE))
    args = p.parse_args()
    g = torch.Generator().manual_seed(0)
    table, t0 = {}, time.perf_counter()
    for m, n in SHAPES:
        train = torch.cat([sample_spectra(m, n, args.samples, kind, g) for kind in KINDS])
        fitted = fit(train)
        held = {kind: sample_spectra(m, n, args.samples, kind, g) for kind in KINDS}
        e_fit = {kind: error(s, fitted) for kind, s in held.items()}
        e_muon = {kind: error(s, MUON_COEFFICIENTS) for kind, s in held.items()}
        keep = sum(e_fit.values()) < sum(e_muon.values())
        out = iterate(held["gaussian"], fitted if keep else MUON_COEFFICIENTS)
        table[f"{m}x{n}"] = {"coefficients": list(fitted if keep else MUON_COEFFICIENTS),
                             "heldout_error": e_fit if keep else e_muon, "heldout_error_muon": e_muon,
                             "gaussian_sigma_out": [round(out.min().item(), 3), round(out.max().item(), 3)]}
        print(f"{m:4d}x{n:<4d} {fitted}  held-out error gaussian {e_fit['gaussian']:.4f} (Muon "
              f"{e_muon['gaussian']:.4f}), power-law {e_fit['power']:.4f} (Muon {e_muon['power']:.4f})"
              + ("" if keep else "  -> kept Muon's"), flush=True)
    atomic_write_json(Path(args.out), {
        "about": "Newton-Schulz (a, b, c) per (min side)x(max side), fitted by "
                 "experiments/optimizers/fit_ns_coefficients.py; error = mean (NS5(σ) - 1)² per singular value",
        "seconds": round(time.perf_counter() - t0, 1), "shapes": table})
    print(json.dumps({"written": args.out}))


if __name__ == "__main__":
    main()
