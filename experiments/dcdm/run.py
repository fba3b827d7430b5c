"""DCDM against CG and incomplete-Cholesky PCG on pressure-Poisson systems (arXiv 2205.10763; README.md here).

    python experiments/dcdm/run.py --quick   # CPU: train at 16³ (experiment=dcdm_quick), solve at 32³ and 64³
    python experiments/dcdm/run.py --full    # GPU: train at 64³ (data=poisson), solve at 64³ and 128³
    python experiments/dcdm/run.py --smoke   # every step at test sizes (2-D, 12² -> 16²; seconds), into --out or a temp dir

The network is trained once on the empty box (a run dir holding ``metrics.json`` is reused) and
then used, unchanged, as the direction generator of the conjugate-direction solver on the
training-like domain (empty box, a closed Neumann system) and on unseen domains (a closed smoke box
with a sphere, a box with random obstacles) at larger grids. Every system gets divergence
right-hand sides; every solver the same tolerance on the true relative residual ‖b − Ax‖/‖b‖.
Writes ``results/<mode>.json``: per (domain, N, tol, solver) the mean iterations and seconds,
``dcdm_iters_64``/``cg_iters_64``/``icpcg_iters_64`` and their seconds (empty box, tol 1e-4),
``unseen_converged`` (every DCDM solve on an unseen domain reached its tolerance), and the table.
"""
from __future__ import annotations

import argparse
import sys
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from neuropde import checkpoint
from neuropde.data.store import atomic_write_json
from neuropde.models.dcdm import network_direction
from neuropde.pde.poisson import assemble, divergence_rhs, make_domain
from neuropde.run import compose_config, build_task, train
from neuropde.solvers import cg, incomplete_cholesky
from neuropde.solvers.dcdm import dcdm_solve

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE.parent))  # experiments/: study.py
from study import study_dirs  # noqa: E402
MODES = {"quick": {"train": ["experiment=dcdm_quick"], "sizes": (32, 64), "systems": 2},
         "full": {"train": ["experiment=dcdm_quick", "data=poisson", "trainer.accelerator=gpu", "trainer.max_epochs=50"],
                  "sizes": (64, 128), "systems": 4},
         # --smoke: dcdm_tiny is 2-D (12²), so its solves are 2-D systems
         "smoke": {"train": ["experiment=dcdm_tiny"], "sizes": (16,), "systems": 1, "dim": 2}}
DOMAINS = {"empty_box": ("training-like", 0), "smoke_like_closed": ("unseen", 1), "box_with_obstacles": ("unseen", 2)}
TOLS = (1e-4, 1e-6)


def trained_task(mode: str, out: Path, device):
    run = out / mode / "train"
    if not (run / "metrics.json").exists():
        t0 = time.perf_counter()
        train(compose_config("train", MODES[mode]["train"] + ["logger=none", f"run_dir={run}"]))
        print(f"trained in {time.perf_counter() - t0:.0f} s", flush=True)
    ckpt = checkpoint.read(run / "checkpoints" / "best.ckpt")
    from omegaconf import OmegaConf

    task = build_task(OmegaConf.create(ckpt["neuropde"]["config"]), ckpt["neuropde"].get("stats"))
    task.load_state_dict(ckpt["state_dict"])
    return task.to(device).eval(), json.loads((run / "metrics.json").read_text())


def solve_all(task, system, rhs: list[torch.Tensor], tol: float, device) -> dict:
    """Mean iterations / seconds (and DCDM fallbacks, convergence) of the three solvers."""
    A = system.matrix_torch(dtype=torch.float64, device=device)
    direction = network_direction(task.net, system)
    t0 = time.perf_counter()
    ic = incomplete_cholesky(system.matrix_scipy())
    ic_setup = time.perf_counter() - t0
    rows = {"dcdm": [], "cg": [], "icpcg": []}
    for b in rhs:
        b = b.to(device)
        with torch.no_grad():
            rows["dcdm"].append(dcdm_solve(A, b, direction, tol=tol, maxiter=500, project=system))
        rows["cg"].append(cg(A, b, tol=tol, maxiter=5000, project=system))
        rows["icpcg"].append(cg(A, b.cpu(), tol=tol, maxiter=5000, M=ic, project=system))
    out = {}
    for name, results in rows.items():
        out[name] = {"iterations": float(np.mean([r.iterations for r in results])),
                     "seconds": float(np.mean([r.seconds for r in results])),
                     "converged": all(bool(r.converged) for r in results)}
    out["dcdm"]["fallbacks"] = int(sum(r.fallbacks for r in rows["dcdm"]))
    out["icpcg"]["setup_seconds"] = ic_setup
    return out


def markdown_table(results: dict) -> str:
    rows = ["| domain | N³ | tol | DCDM iterations | CG iterations | ICPCG iterations | DCDM s | CG s | ICPCG s (+ factorisation) | DCDM fallbacks |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["solves"]:
        d, c, i = r["dcdm"], r["cg"], r["icpcg"]
        rows.append(f"| {r['domain']} ({r['kind']}) | {r['N']} | {r['tol']:g} | {d['iterations']:.1f} | {c['iterations']:.1f} | "
                    f"{i['iterations']:.1f} | {d['seconds']:.2f} | {c['seconds']:.2f} | {i['seconds']:.2f} (+{i['setup_seconds']:.2f}) | "
                    f"{d['fallbacks']} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--quick", action="store_true", help="CPU: train at 16³, solve at 32³ and 64³")
    g.add_argument("--full", action="store_true", help="GPU: train at 64³, solve at 64³ and 128³")
    g.add_argument("--smoke", action="store_true", help="every step at test sizes (seconds), into --out or a temp dir")
    p.add_argument("--out", default=None, help="where the training run goes (default: runs/ here)")
    args = p.parse_args(argv)
    mode = "quick" if args.quick else "smoke" if args.smoke else "full"
    args.out, results_dir = study_dirs(HERE, "dcdm", args.smoke, args.out)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    task, train_metrics = trained_task(mode, Path(args.out), device)
    results = {"solves": [], "train": {k: train_metrics[k] for k in ("params", "epochs", "sec_per_epoch", "test/rel_l2")}}
    for N in MODES[mode]["sizes"]:
        for domain, (kind, seed) in DOMAINS.items():
            system = assemble(make_domain(domain, N, MODES[mode].get("dim", 3), seed))
            rng = np.random.default_rng(100 + seed)
            rhs = [torch.as_tensor(divergence_rhs(system, rng), dtype=torch.float64) for _ in range(MODES[mode]["systems"])]
            for tol in TOLS:
                r = solve_all(task, system, rhs, tol, device)
                results["solves"].append({"domain": domain, "kind": kind, "N": N, "tol": tol, "unknowns": system.n, **r})
                print(f"{domain} {N}³ tol {tol:g}: DCDM {r['dcdm']['iterations']:.0f} it {r['dcdm']['seconds']:.2f} s, "
                      f"CG {r['cg']['iterations']:.0f} it {r['cg']['seconds']:.2f} s, "
                      f"ICPCG {r['icpcg']['iterations']:.0f} it {r['icpcg']['seconds']:.2f} s", flush=True)
    big = MODES[mode]["sizes"][-1]
    key = next(r for r in results["solves"] if r["domain"] == "empty_box" and r["N"] == big and r["tol"] == 1e-4)
    for name in ("dcdm", "cg", "icpcg"):
        results[f"{name}_iters_{big}"] = key[name]["iterations"]
        results[f"{name}_seconds_{big}"] = key[name]["seconds"]
    results["unseen_converged"] = all(r["dcdm"]["converged"] for r in results["solves"] if r["kind"] == "unseen")
    results["machine"] = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                          "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version()}
    results_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(results_dir / f"{mode}.json", results)
    print(json.dumps({k: v for k, v in results.items() if k not in ("solves", "machine")}, indent=1))
    print(markdown_table(results))
    print(f"wrote {results_dir / f'{mode}.json'}")


if __name__ == "__main__":
    main()
