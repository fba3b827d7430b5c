"""EquiNO against its baselines on our RVEs, and against the FE solve it replaces (arXiv 2504.07976;
README.md here).

    python experiments/equino/run.py --quick   # CPU: fibre and ellipse RVEs (16×16 quad8)
    python experiments/equino/run.py --full    # GPU for training: 32×32 RVEs, 20,000 L-BFGS iterations
    python experiments/equino/run.py --smoke   # every step at test sizes (8×8 RVEs, seconds), into --out or a temp dir

Accuracy: ``python train.py experiment=equino_quick`` per RVE with the three losses of the same
networks: ``physics`` (EquiNO, no labels beyond the bases), ``data`` (supervised on the 100 FE
training snapshots) and ``energy`` (deep-energy variant, as the reference codes it). Errors are
medians over the 100 test macro strains of the per-sample relative L2 over the integration points
(σxx, σyy, σxy separately), the reference's metric. A run dir holding ``metrics.json`` is reused.

Speed, in this process, on the test macro strains: one FE solve (Newton to 1e-10 plus the
homogenised tangent by static condensation) per macro point, against EquiNO's fast path (σ̄ from
the stress branch and C̄ by automatic differentiation, all points in one batch); median of
repeats after a warm-up, on the CPU thread count of the run.

Writes ``results/<mode>.json``: ``equino_median_rel_err_{sxx,syy,sxy}`` and ``speedup_vs_fe`` (fibre
RVE), every run's medians by RVE and loss, the timings and the machine.
"""
from __future__ import annotations

import argparse
import sys
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE.parent))  # experiments/: study.py
from study import study_dirs  # noqa: E402
MODES = {
    "quick": {"rves": {"fibre": "rve", "ellipse": "rve_ellipse"}, "losses": ("physics", "data", "energy"),
              "extra": ["trainer.enable_progress_bar=false"], "fe_points": 20, "repeats": 5},
    "full": {"rves": {"fibre": "rve", "ellipse": "rve_ellipse", "three_circles": "rve_three_circles"},
             "losses": ("physics", "data", "energy"),
             "extra": ["data.resolution=32", "trainer.max_epochs=40", "trainer.accelerator=auto",
                       "trainer.enable_progress_bar=false"], "fe_points": 20, "repeats": 5},
    # --smoke: equino_tiny on 8×8 fibre and ellipse RVEs (a data set name of its own for the ellipse)
    "smoke": {"experiment": "equino_tiny", "rves": {"fibre": "rve_tiny",
                                                    "ellipse": "rve_tiny data.name=rve_tiny_ellipse data.generator.geometry=ellipse"},
              "losses": ("physics", "data", "energy"), "extra": ["logger=none"], "fe_points": 2, "repeats": 1},
}
KEYS = ("test/median_rel_err_sxx", "test/median_rel_err_syy", "test/median_rel_err_sxy", "test/rel_l2",
        "test/median_rel_err_sigma_bar", "test/median_rel_err_C_bar", "test/median_rel_err_ux",
        "test/median_rel_err_uy", "train_seconds", "epochs", "params")


def train_runs(mode: str, out: Path) -> dict:
    from neuropde.run import compose_config, train

    cfg, results = MODES[mode], {}
    for rve, data in cfg["rves"].items():
        for loss in cfg["losses"]:
            run = out / mode / f"{rve}_{loss}"
            if not (run / "metrics.json").exists():
                t0 = time.perf_counter()
                experiment = cfg.get("experiment", "equino_quick")
                train(compose_config("train", [f"experiment={experiment}", *f"data={data}".split(), f"model.task.loss={loss}",
                                               *cfg["extra"], f"run_dir={run}"]))
                print(f"{rve}/{loss}: trained in {time.perf_counter() - t0:.0f} s", flush=True)
            metrics = json.loads((run / "metrics.json").read_text())
            results.setdefault(rve, {})[loss] = {**{k: metrics.get(k) for k in KEYS}, "run_dir": str(run)}
    return results


def time_fe_and_fast_path(run: Path, n_points: int, repeats: int) -> dict:
    """Seconds per macro point: FE (solve + tangent) against EquiNO's batched σ̄ + C̄ (same machine)."""
    from neuropde import checkpoint
    from neuropde.data.generators import rve_solver
    from neuropde.run import build_datamodule, build_task, predict_config
    from neuropde.run import compose_config

    ckpt = checkpoint.read(run / "checkpoints" / "best.ckpt")
    pcfg = predict_config(compose_config("predict", [f"ckpt={run}", f"run_dir={run / 'timing'}"]), ckpt)
    dm = build_datamodule(pcfg, progress=False)
    task = build_task(pcfg, None)
    task.load_state_dict(ckpt["state_dict"])
    task.eval()
    E = torch.as_tensor(dm.snapshots("test")["E_bar"])
    solver = rve_solver(dict(pcfg.data))

    fe = []
    for e in E[:n_points].numpy():
        t0 = time.perf_counter()
        solver.homogenized_tangent(solver.solve(e))
        fe.append(time.perf_counter() - t0)

    def fast() -> float:
        t0 = time.perf_counter()
        task(E).detach()
        task.tangent(E).detach()
        return (time.perf_counter() - t0) / len(E)

    fast()  # warm-up
    fast_s = statistics.median(fast() for _ in range(repeats))
    fe_s = statistics.median(fe)
    return {"fe_sec_per_point": fe_s, "equino_sec_per_point": fast_s, "speedup_vs_fe": fe_s / fast_s,
            "fe_points": len(fe), "equino_batch": len(E), "fe_newton_iterations":
            float(np.mean(dm.snapshots("test")["iterations"]))}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--quick", action="store_true", help="CPU: 16×16 fibre and ellipse RVEs")
    g.add_argument("--full", action="store_true", help="GPU: 32×32 RVEs, three geometries")
    g.add_argument("--smoke", action="store_true", help="every step at test sizes (seconds), into --out or a temp dir")
    p.add_argument("--out", default=None, help="where run dirs go (default: runs/ here)")
    args = p.parse_args(argv)
    mode = "quick" if args.quick else "smoke" if args.smoke else "full"
    args.out, results_dir = study_dirs(HERE, "equino", args.smoke, args.out)
    cfg = MODES[mode]
    t0 = time.perf_counter()
    runs = train_runs(mode, Path(args.out))
    timing = {rve: time_fe_and_fast_path(Path(runs[rve]["physics"]["run_dir"]), cfg["fe_points"], cfg["repeats"])
              for rve in runs}
    main_run = runs["fibre"]["physics"]
    results = {
        "mode": mode,
        **{f"equino_median_rel_err_{c}": main_run[f"test/median_rel_err_{c}"] for c in ("sxx", "syy", "sxy")},
        "speedup_vs_fe": timing["fibre"]["speedup_vs_fe"],
        "runs": runs, "timing": timing,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "machine": {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
                    "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version()},
    }
    from neuropde.data.store import atomic_write_json

    results_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(results_dir / f"{mode}.json", results)
    print(json.dumps({k: v for k, v in results.items() if k not in ("runs", "timing")}, indent=1))
    for rve, by_loss in runs.items():
        for loss, m in by_loss.items():
            print(f"{rve:14s} {loss:8s} σxx {100 * m['test/median_rel_err_sxx']:.2f} %  σyy "
                  f"{100 * m['test/median_rel_err_syy']:.2f} %  σxy {100 * m['test/median_rel_err_sxy']:.2f} %  "
                  f"σ̄ {100 * m['test/median_rel_err_sigma_bar']:.2f} %")
    print(f"wrote {results_dir / f'{mode}.json'}")


if __name__ == "__main__":
    main()
