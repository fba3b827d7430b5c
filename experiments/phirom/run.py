"""Φ-ROM against the same reduced-order model trained on data alone, inside and beyond the training
horizon (arXiv 2505.14595; README.md here).

    python experiments/phirom/run.py --quick   # CPU: parametric Burgers (data=burgers_nu), 3 seeds
    python experiments/phirom/run.py --full    # GPU machine: longer Burgers training, then ns2d
    python experiments/phirom/run.py --full --studies ns2d   # GPU machine: ns2d alone
    python experiments/phirom/run.py --smoke   # both studies at test sizes (seconds), into --out or a temp dir

Each run is ``python train.py experiment=phirom_quick`` with ``model.task.dynamics_target=solver``
(Φ-ROM: Ψ fitted to the latent velocity that reproduces the data solver's time derivative, the
solver's gradients reaching the decoder and latents after the warm-up) or ``latent`` (the data-only
baseline: the same decoder, latents and Ψ, but Ψ fitted to the learned latent trajectories, as DINo;
the reference's λ = 1), and ``model.task.obs_fraction`` 1 (every grid point) or 0.05 (fixed random
sensors per training trajectory). Every run sees the same data (``data.seed`` fixed); ``seed`` changes
the initialisation and the batches. Errors are on the test viscosities (drawn inside the training
range): relative L2 per frame, averaged over frames 1–39 (the training horizon, ``interp``) and
40–79 (twice the horizon, ``extrap``), then over trajectories. A run dir holding ``metrics.json`` is
reused, so an interrupted study resumes.

Writes ``results/<mode>.json``: ``phirom_extrap_rel_l2`` and ``dataonly_extrap_rel_l2`` (lists over
seeds, full observations) and their ``interp`` and ``sparse`` (5 %) counterparts, every run's
metrics and per-frame errors, and ``results/<mode>_error_vs_time.png``.

``--full`` also runs the ns2d study (``experiment=phirom_ns2d``: 2-D Navier–Stokes vorticity at 64²,
the reference's NS settings, horizon 50 frames, evaluation to 100; 5 % observations = 205 sensors)
into ``results/full_ns2d.json``, with the same two methods; it has not been run yet.
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
METHODS = {"phirom": "solver", "dataonly": "latent"}
MODES = {
    "quick": {"experiment": "phirom_quick", "data": "burgers_nu", "train_frames": 40, "frames": 80,
              "seeds": (0, 1, 2), "observations": {"full": 1.0, "sparse": 0.05},
              "extra": ["trainer.enable_progress_bar=false"]},
    "full": {"experiment": "phirom_quick", "data": "burgers_nu", "train_frames": 40, "frames": 80,
             "seeds": (0, 1, 2), "observations": {"full": 1.0, "sparse": 0.05},
             "extra": ["trainer.enable_progress_bar=false", "trainer.max_epochs=2000", "trainer.accelerator=auto",
                       "model.task.evolve_start=500"]},
    "full_ns2d": {"experiment": "phirom_ns2d", "data": "ns2d_rom", "train_frames": 50, "frames": 100,
                  "seeds": (0, 1, 2), "observations": {"full": 1.0, "sparse": 0.05},
                  "extra": ["trainer.enable_progress_bar=false"]},
    # --smoke: both studies at test sizes (burgers_tiny, 16² ns2d_rom_tiny), one seed, 2 epochs
    "smoke": {"experiment": "phirom_tiny", "data": "burgers_tiny", "train_frames": 8, "frames": 16,
              "seeds": (0,), "observations": {"full": 1.0, "sparse": 0.05},
              "extra": ["logger=none", "data.loader.epoch_repeats=2"]},
    "smoke_ns2d": {"experiment": "phirom_ns2d_tiny", "data": "ns2d_rom_tiny", "train_frames": 8, "frames": 16,
                   "seeds": (0,), "observations": {"full": 1.0},
                   "extra": ["logger=none", "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1",
                             "data.loader.epoch_repeats=1"]},
}
STUDIES = {"quick": {"burgers": "quick"}, "full": {"burgers": "full", "ns2d": "full_ns2d"},
           "smoke": {"burgers": "smoke", "ns2d": "smoke_ns2d"}}


def run_one(run: Path, experiment: str, method: str, fraction: float, seed: int, extra: list[str]) -> dict:
    """Train (unless done), then predict the test split; returns the metrics of both."""
    from neuropde.run import compose_config, predict, train

    if not (run / "metrics.json").exists():
        t0 = time.perf_counter()
        train(compose_config("train", [f"experiment={experiment}", f"model.task.dynamics_target={METHODS[method]}",
                                       f"model.task.obs_fraction={fraction}", f"seed={seed}", *extra,
                                       f"run_dir={run}"]))
        print(f"{run.name}: trained in {time.perf_counter() - t0:.0f} s", flush=True)
    metrics = json.loads((run / "metrics.json").read_text())
    pred_dir = run / "predict_test"
    if not (pred_dir / "metrics.json").exists():
        predict(compose_config("predict", [f"ckpt={run}", f"run_dir={pred_dir}", "n_plots=1"]))
    pred = json.loads((pred_dir / "metrics.json").read_text())
    return {"interp": metrics["test/rel_l2"], "extrap": metrics["test/rel_l2_extrap"],
            "per_frame": pred["test/rel_l2_per_frame"], "train_seconds": metrics.get("train_seconds"),
            "epochs": metrics.get("epochs"), "run_dir": str(run)}


def plot(runs: dict, file: Path, train_frames: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(5.5 * len(runs), 3.6), squeeze=False)
    for ax, (obs, by_method) in zip(axes[0], runs.items()):
        for method, by_seed in by_method.items():
            curves = np.array([r["per_frame"] for r in by_seed.values()])
            ax.semilogy(curves.mean(0), label=f"{method} (mean of {len(curves)} seeds)")
            ax.fill_between(np.arange(curves.shape[1]), curves.min(0), curves.max(0), alpha=0.2)
        ax.axvline(train_frames, color="k", ls="--", lw=0.8)
        ax.set(title=f"{obs} observations", xlabel="frame (training horizon ends at the dashed line)",
               ylabel="relative L2 (test)")
        ax.legend()
    fig.tight_layout()
    file.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(file, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--quick", action="store_true", help="CPU: parametric Burgers, 3 seeds")
    g.add_argument("--full", action="store_true", help="GPU machine: longer Burgers training, then ns2d")
    g.add_argument("--smoke", action="store_true", help="both studies at test sizes (seconds), into --out or a temp dir")
    p.add_argument("--out", default=None, help="where run dirs go (default: runs/ here)")
    p.add_argument("--observations", nargs="*", help="subset of: full sparse")
    p.add_argument("--studies", nargs="*", help="subset of: burgers ns2d (--full runs both)")
    args = p.parse_args(argv)
    args.out, args.results = study_dirs(HERE, "phirom", args.smoke, args.out)
    studies = STUDIES["quick" if args.quick else "smoke" if args.smoke else "full"]
    for name, mode in studies.items():
        if not args.studies or name in args.studies:
            study(mode, args)


def study(mode: str, args) -> None:
    """Both methods × seeds × observation fractions of one mode; writes results/<mode>.json and the plot."""
    cfg = MODES[mode]
    observations = {k: v for k, v in cfg["observations"].items() if not args.observations or k in args.observations}
    t0 = time.perf_counter()
    runs: dict = {}
    for obs, fraction in observations.items():
        for seed in cfg["seeds"]:
            for method in METHODS:
                run = Path(args.out) / mode / f"{obs}_{method}_seed{seed}"
                runs.setdefault(obs, {}).setdefault(method, {})[seed] = run_one(run, cfg["experiment"], method,
                                                                                 fraction, seed, cfg["extra"])
    results = {"mode": mode, "data": cfg["data"], "train_frames": cfg["train_frames"], "frames": cfg["frames"]}
    for obs, by_method in runs.items():
        suffix = "" if obs == "full" else f"_{obs}"
        for method, by_seed in by_method.items():
            for span in ("interp", "extrap"):
                results[f"{method}_{span}_rel_l2{suffix}"] = [by_seed[s][span] for s in cfg["seeds"]]
        wins = sum(a < b for a, b in zip(results[f"phirom_extrap_rel_l2{suffix}"],
                                         results[f"dataonly_extrap_rel_l2{suffix}"]))
        results[f"phirom_wins_extrap{suffix}"] = f"{wins}/{len(cfg['seeds'])}"
    results.update({"runs": runs, "wall_seconds": round(time.perf_counter() - t0, 1),
                    "machine": {"device": torch.cuda.get_device_name() if torch.cuda.is_available()
                                else platform.processor() or "cpu", "threads": torch.get_num_threads(),
                                "torch": torch.__version__, "python": platform.python_version()}})
    from neuropde.data.store import atomic_write_json

    args.results.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.results / f"{mode}.json", results)
    plot(runs, args.results / f"{mode}_error_vs_time.png", results["train_frames"])
    for key, value in results.items():
        if key.endswith(("rel_l2", "rel_l2_sparse")):
            print(f"{key:34s} mean {statistics.mean(value):.4f}  by seed {[round(v, 4) for v in value]}")
        elif key.startswith("phirom_wins"):
            print(f"{key:34s} {value}")
    print(f"wrote {args.results / f'{mode}.json'}")


if __name__ == "__main__":
    main()
