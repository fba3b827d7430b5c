"""Convergence order of the Darcy solver on the data set's thresholded (12 / 3) coefficient.

    python experiments/darcy/run.py            # reference 1025², grids 17² ... 257², 4 samples (~10 min, one core)
    python experiments/darcy/run.py --seeds 8  # more samples (each adds one 1025² solve)
    python experiments/darcy/run.py --smoke    # the same study at 5² ... 17² against 65², 2 samples (~1 s), to a temp dir

``neuropde.pde.darcy.solve_darcy`` on the coefficient ``darcy_coefficient(s, seed)`` (the GRF
thresholded at 0, sampled at the nodes, as the data set makes it) at ``s`` = 17, 33, 65, 129, 257
nodes per side, against the same sample solved at ``ref`` = 1025 nodes: the grids nest, so the
errors are measured at the coarse nodes (``nodal_errors``: relative discrete L2, H1 seminorm and
max). Orders are least-squares slopes of log error against log h over the sizes at least 8× coarser
than the reference (17-129), on the geometric mean over samples, and per sample. One
``results/<ref>_seed<k>.json`` per sample (resumable), ``results/convergence.json`` for the study.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SIZES = (17, 33, 65, 129, 257)
SMOKE = {"sizes": (5, 9, 17), "ref": 65, "seeds": 2}  # --smoke: every step of the study at tiny grids
NORMS = ("l2", "h1", "max")


def one_sample(seed: int, ref_s: int, sizes) -> dict:
    from neuropde.pde.darcy import darcy_coefficient, nodal_errors, solve_darcy

    t0 = time.perf_counter()
    ref = solve_darcy(darcy_coefficient(ref_s, seed))
    t_ref = time.perf_counter() - t0
    errors = {str(s): nodal_errors(solve_darcy(darcy_coefficient(s, seed)), ref) for s in sizes}
    return {"seed": seed, "ref": ref_s, "errors": errors, "ref_solve_seconds": round(t_ref, 1),
            "high_fraction": float((darcy_coefficient(ref_s, seed) == 12.0).mean())}


def slopes(errs: np.ndarray, sizes) -> dict:
    """Least-squares order of errs (len(sizes), len(NORMS)) against h = 1/(s − 1)."""
    log_h = -np.log(np.asarray(sizes, dtype=float) - 1)
    return {k: float(np.polyfit(log_h, np.log(errs[:, i]), 1)[0]) for i, k in enumerate(NORMS)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--ref", type=int, default=1025)
    p.add_argument("--smoke", action="store_true", help="tiny grids, seconds; writes to --out or a temporary directory")
    p.add_argument("--out", help="where the result files go (default: results/ here)")
    args = p.parse_args(argv)
    from neuropde.data.store import atomic_write_json

    if args.smoke:
        import tempfile

        args.seeds, args.ref = SMOKE["seeds"], SMOKE["ref"]
        args.out = args.out or tempfile.mkdtemp(prefix="neuropde-smoke-darcy-")
    out = Path(args.out) if args.out else HERE / "results"
    out.mkdir(parents=True, exist_ok=True)
    sizes = tuple(s for s in (SMOKE["sizes"] if args.smoke else SIZES) if s < args.ref)
    fit_sizes = tuple(s for s in sizes if (args.ref - 1) // (s - 1) >= 8)
    samples = []
    for seed in range(args.seeds):
        f = out / f"ref{args.ref}_seed{seed}.json"
        if not f.exists():
            atomic_write_json(f, one_sample(seed, args.ref, sizes))
        samples.append(json.loads(f.read_text()))
        print(f"seed {seed}: " + "  ".join(f"s={s} " + "/".join(f"{samples[-1]['errors'][str(s)][k]:.3g}" for k in NORMS)
                                         for s in sizes), flush=True)
    errs = np.array([[[smp["errors"][str(s)][k] for k in NORMS] for s in sizes] for smp in samples])
    geo = np.exp(np.log(errs).mean(axis=0))  # (sizes, norms)
    idx = [sizes.index(s) for s in fit_sizes]
    results = {
        "coefficient": "darcy_coefficient(s, seed): GRF (alpha 2, tau 3) thresholded to 12 / 3, sampled at the nodes",
        "reference_nodes": args.ref, "sizes": list(sizes), "fit_sizes": list(fit_sizes), "seeds": args.seeds,
        "norms": "relative, at the coarse nodes: discrete L2, discrete H1 seminorm (edge difference quotients), max",
        "geometric_mean_errors": {str(s): dict(zip(NORMS, map(float, geo[i]))) for i, s in enumerate(sizes)},
        "order_fitted": slopes(geo[idx], fit_sizes),
        "order_pairwise": {f"{a}->{b}": dict(zip(NORMS, map(float, np.log2(geo[i] / geo[i + 1]))))
                           for i, (a, b) in enumerate(zip(sizes, sizes[1:]))},
        "order_fitted_per_sample": [slopes(e[idx], fit_sizes) for e in errs],
        "samples": samples, "threads": os.environ.get("OMP_NUM_THREADS"),
    }
    atomic_write_json(out / "convergence.json", results)
    print(json.dumps({k: results[k] for k in ("order_fitted", "order_pairwise")}, indent=1))
    print(f"wrote {out / 'convergence.json'}")


if __name__ == "__main__":
    main()
