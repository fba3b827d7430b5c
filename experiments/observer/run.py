"""Prediction and data assimilation with a recursive observer (NODA, arXiv 2402.15656; README.md here).

    python experiments/observer/run.py --quick   # CPU: ks (L = 22, 64 points) and kdv (128 points)
    python experiments/observer/run.py --full    # GPU: ks_64 (L = 64, 256 points) and ns2d
    python experiments/observer/run.py --smoke   # every step at test sizes (ks_tiny, kdv_tiny; seconds), into --out or a temp dir
    python experiments/observer/run.py --quick --data ks --gain gated innovation --seeds 0 1 2   # gain comparison

One observer per data set is trained (``experiment=observer_quick`` settings; a run dir holding
``metrics.json`` is reused), then run over the test trajectories for a horizon of 4× the training
window after the warm-up, with measurements of a random share p ∈ {1, 0.25, 0.05} of the points
every 5 steps at relative noise σ ∈ {0, 0.05}, and open loop (the same warm-up, no later
measurements). Writes ``results/<mode>.json``: ``<data>_assim_final_rel_l2`` and
``<data>_openloop_final_rel_l2`` at p = 0.25, σ = 0.05 (the acceptance setting), the whole grid
(final and mean relative L2, and the per-step curves), and ``results/<mode>_<data>.png``.

``--gain`` trains each named gain (``model.net.gain``; default: the config's) and ``--seeds`` each
seed; every run then gets its own run dir ``<data>_<gain>_seed<s>`` and
``results/<mode>_gains.json`` collects per run: the acceptance setting's final and mean relative
L2, assimilated and open loop, and its mean gate over the measured steps after the warm-up.
``--epochs`` and ``--backend neuropde`` (predictor and gain FNOs on neuropde's layers, the same
networks, faster on a CPU) change the training budget and speed; both show in the run dir name.
``results/<mode>.json`` and the plots take only runs of the config's gain and epochs (first seed).
"""
from __future__ import annotations

import argparse
import sys
import json
import platform
import time
from pathlib import Path

import torch

from neuropde import checkpoint
from neuropde.tasks.observer import run_observer
from neuropde.data.measurement import MeasurementModel
from neuropde.data.store import atomic_write_json
from neuropde.losses import rel_l2_per_frame
from neuropde.run import compose_config, build_datamodule, build_task, predict_config, train
from neuropde.tasks.observer import without_horizon

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE.parent))  # experiments/: study.py
from study import study_dirs  # noqa: E402
DATA = {"quick": ["ks", "kdv"], "full": ["ks_64", "ns2d"], "smoke": ["ks_tiny", "kdv_tiny"]}
# --smoke: observer_tiny, its test trajectories long enough for warm-up + 4 windows (a data set name of their own)
SMOKE = ["experiment=observer_tiny", "data.generator.n_frames=56", "data.samples.test=2"]
FRACTIONS, NOISES, EVERY = (1.0, 0.25, 0.05), (0.0, 0.05), 5


def run_name(data: str, gain: str | None, seed: int | None, epochs: int | None, backend: str | None,
             rank: int | None = None) -> str:
    """``<data>`` for the config's defaults, else ``<data>_<gain>[_r<rank>]_seed<s>[_e<epochs>][_<backend>]``."""
    if gain is None and seed is None and epochs is None and backend is None and rank is None:
        return data
    return (f"{data}_{gain or 'default'}" + (f"_r{rank}" if rank else "") + f"_seed{seed or 0}"
            + (f"_e{epochs}" if epochs else "") + (f"_{backend}" if backend else ""))


def trained(mode: str, data: str, out: Path, gain: str | None = None, seed: int | None = None,
            epochs: int | None = None, backend: str | None = None, rank: int | None = None) -> Path:
    run = out / mode / run_name(data, gain, seed, epochs, backend, rank)
    if not (run / "metrics.json").exists():
        extra = {"quick": [], "smoke": SMOKE + [f"data.name={data}_smoke"]}.get(
            mode, ["trainer.accelerator=gpu", "trainer.max_epochs=100"])
        extra += [f"model.net.gain={gain}"] if gain else []
        extra += [f"model.net.gain_rank={rank}"] if rank else []
        extra += [f"seed={seed}"] if seed is not None else []
        extra += [f"trainer.max_epochs={epochs}"] if epochs else []
        extra += [f"model.net.predictor.backend={backend}", f"model.net.gain_backend={backend}"] if backend else []
        t0 = time.perf_counter()
        train(compose_config("train", ["experiment=observer_quick", f"data={data}", "logger=none", f"run_dir={run}"] + extra))
        print(f"{run.name}: trained in {time.perf_counter() - t0:.0f} s", flush=True)
    return run


def evaluate(run: Path, device) -> dict:
    """Final and mean relative L2 (and curves) of assimilation and open loop over the grid."""
    ckpt = checkpoint.read(run / "checkpoints" / "best.ckpt")
    pcfg = predict_config(compose_config("predict", [f"ckpt={run}", f"run_dir={run / 'eval'}"]), ckpt)
    task = build_task(pcfg, ckpt["neuropde"].get("stats"))
    task.load_state_dict(ckpt["state_dict"])
    task.to(device).eval()
    window = int(pcfg.data.window.t_in) + int(pcfg.data.window.t_out)
    warmup, horizon = task.warmup, 4 * window
    truth = build_datamodule(pcfg, progress=False).load("test")
    if truth.shape[1] < warmup + horizon:
        raise SystemExit(f"{pcfg.data.name}: test trajectories have {truth.shape[1]} frames, fewer than "
                         f"warm-up {warmup} + horizon {horizon}; raise data.generator.n_frames")
    truth = truth[:, :warmup + horizon]
    scale = float(task.norm_std)
    grid = {}
    for p in FRACTIONS:
        for sigma in NOISES:
            model = MeasurementModel(operator="full" if p == 1.0 else "random", fraction=p, noise=sigma, every=EVERY)
            y, mask = model.measure(truth, warmup, torch.Generator().manual_seed(0), scale)
            curves = {}
            for name, m in (("assim", mask), ("openloop", without_horizon(mask, warmup))):
                est = run_observer(task, y, m, batch_size=64, device=device)
                curves[name] = rel_l2_per_frame(est[:, warmup:], truth[:, warmup:])
            grid[f"p{p:g}_sigma{sigma:g}"] = {
                "fraction": p, "noise": sigma, "every": EVERY, "gate_mean": mean_gate(task, y, mask, warmup, device),
                **{f"{n}_final_rel_l2": float(c[-1]) for n, c in curves.items()},
                **{f"{n}_mean_rel_l2": float(c.mean()) for n, c in curves.items()},
                **{f"{n}_curve": [round(float(v), 5) for v in c] for n, c in curves.items()}}
    return {"warmup": warmup, "training_window": window, "horizon": horizon, "grid": grid,
            "trajectories": int(truth.shape[0]), "dt_snap": float(pcfg.data.spec.get("dt_snap", 1.0))}


@torch.no_grad()
def mean_gate(task, y: torch.Tensor, mask: torch.Tensor, warmup: int, device) -> float:
    """Mean gate value over the measured steps after the warm-up (all trajectories at once)."""
    out = task.net.rollout(task.normalize(y.to(device)) * mask.to(device), mask.to(device))
    return float(torch.nanmean(out["gate"][warmup:]))


def plot(result: dict, data: str, path: Path) -> None:
    from neuropde.callbacks.plots import _pyplot, _save

    fig, axes = _pyplot().subplots(1, len(NOISES), figsize=(5.5 * len(NOISES), 3.8), squeeze=False)
    for ax, sigma in zip(axes[0], NOISES):
        for p in FRACTIONS:
            r = result["grid"][f"p{p:g}_sigma{sigma:g}"]
            steps = range(1, len(r["assim_curve"]) + 1)
            line, = ax.semilogy(steps, r["assim_curve"], label=f"assimilated, p = {p:g}")
            ax.semilogy(steps, r["openloop_curve"], ":", color=line.get_color(), alpha=0.6)
        ax.axvline(result["training_window"], color="grey", lw=0.8, ls="--")
        ax.set_title(f"{data}: σ = {sigma:g}, measurements every {EVERY} steps (dotted: open loop)", fontsize=9)
        ax.set_xlabel("step after the warm-up (dashed: training window)")
        ax.set_ylabel("relative L2")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path, dpi=100)


def markdown_table(results: dict) -> str:
    rows = ["| data | p (observed share) | σ | assimilated, final | open loop, final | assimilated, mean | open loop, mean |",
            "|---|---|---|---|---|---|---|"]
    for data in results["data"]:
        for r in results[data]["grid"].values():
            rows.append(f"| {data} | {r['fraction']:g} | {r['noise']:g} | {r['assim_final_rel_l2']:.4f} | "
                        f"{r['openloop_final_rel_l2']:.4f} | {r['assim_mean_rel_l2']:.4f} | {r['openloop_mean_rel_l2']:.4f} |")
    return "\n".join(rows)


def gains_table(gains: dict) -> str:
    """Per run and mean ± std over seeds (per data, gain, epochs, backend) at p = 0.25, σ = 0.05."""
    rows = ["| data | gain | seed | epochs | s/epoch | assimilated, final | open loop, final | ratio | "
            "assimilated, mean | mean gate |", "|---|---|---|---|---|---|---|---|---|---|"]
    groups: dict = {}
    for r in gains.values():
        groups.setdefault((r["data"], r["gain"], r["epochs"], r["backend"]), []).append(r)
    for (data, gain, epochs, _), runs in sorted(groups.items()):
        for r in sorted(runs, key=lambda r: r["seed"]):
            rows.append(f"| {data} | {gain} | {r['seed']} | {epochs} | {r['sec_per_epoch']:.0f} | "
                        f"{r['assim_final_rel_l2']:.4f} | {r['openloop_final_rel_l2']:.4f} | "
                        f"{r['openloop_final_rel_l2'] / r['assim_final_rel_l2']:.1f} | "
                        f"{r['assim_mean_rel_l2']:.4f} | {r['gate_mean']:.3f} |")
        if len(runs) > 1:
            def ms(k, f=".4f"):
                v = torch.tensor([r[k] for r in runs], dtype=torch.float64)
                return f"{float(v.mean()):{f}} ± {float(v.std()):{f}}"
            ratio = torch.tensor([r["openloop_final_rel_l2"] / r["assim_final_rel_l2"] for r in runs])
            rows.append(f"| **{data}** | **{gain}** | mean ± std | {epochs} | | **{ms('assim_final_rel_l2')}** | "
                        f"{ms('openloop_final_rel_l2')} | {float(ratio.mean()):.1f} | {ms('assim_mean_rel_l2')} | "
                        f"{ms('gate_mean', '.3f')} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--quick", action="store_true", help="CPU-sized: ks and kdv")
    g.add_argument("--full", action="store_true", help="GPU-sized: ks_64 and ns2d")
    g.add_argument("--smoke", action="store_true", help="every step at test sizes (seconds), into --out or a temp dir")
    p.add_argument("--data", nargs="*", default=None, help="a subset of the mode's data sets")
    p.add_argument("--gain", nargs="*", default=None, choices=("gated", "innovation"),
                   help="train these gains (model.net.gain) instead of the config's")
    p.add_argument("--gain-rank", type=int, default=None, help="model.net.gain_rank (gain=innovation)")
    p.add_argument("--seeds", nargs="*", type=int, default=None, help="train these seeds (default: the config's)")
    p.add_argument("--epochs", type=int, default=None, help="trainer.max_epochs (default: the experiment's)")
    p.add_argument("--backend", choices=("neuralop", "neuropde"), default=None,
                   help="FNO layers of predictor and gain (default: the config's)")
    p.add_argument("--out", default=None, help="where run dirs go (default: runs/ here)")
    args = p.parse_args(argv)
    mode = "quick" if args.quick else "smoke" if args.smoke else "full"
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    args.out, results_dir = study_dirs(HERE, "observer", args.smoke, args.out)
    path = results_dir / f"{mode}.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    gains_path = results_dir / f"{mode}_gains.json"
    gains = json.loads(gains_path.read_text()) if gains_path.exists() else {}
    for data, seed, gain in [(d, s, g) for d in args.data or DATA[mode] for s in args.seeds or [None]
                             for g in args.gain or [None]]:  # seeds outermost: gains stay paired if cut short
        run = trained(mode, data, Path(args.out), gain, seed, args.epochs, args.backend, args.gain_rank)
        metrics = json.loads((run / "metrics.json").read_text())
        r = evaluate(run, device)
        net = checkpoint.read(run / "checkpoints" / "best.ckpt")["neuropde"]["config"]["model"]["net"]
        label = net.get("gain", "gated") + (f" (rank {net['gain_rank']})" if net.get("gain_rank") else "")
        r.update(params=metrics["params"], epochs=metrics["epochs"], sec_per_epoch=metrics["sec_per_epoch"],
                 gain=label, seed=seed or 0, run=run.name)
        acc = r["grid"]["p0.25_sigma0.05"]
        gains[run.name] = {"data": data, "gain": r["gain"], "seed": r["seed"], "epochs": r["epochs"],
                           "sec_per_epoch": r["sec_per_epoch"], "params": r["params"],
                           "backend": args.backend or "config",
                           **{k: acc[k] for k in ("assim_final_rel_l2", "openloop_final_rel_l2",
                                                  "assim_mean_rel_l2", "openloop_mean_rel_l2", "gate_mean")}}
        gains_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(gains_path, gains)
        if args.gain or args.gain_rank or args.epochs or (args.seeds and seed != args.seeds[0]):
            continue  # results/<mode>.json and the plots: the config's model and budget, first seed only
        key = data.split("_")[0]
        results[data] = r
        results[f"{key}_assim_final_rel_l2"] = r["grid"]["p0.25_sigma0.05"]["assim_final_rel_l2"]
        results[f"{key}_openloop_final_rel_l2"] = r["grid"]["p0.25_sigma0.05"]["openloop_final_rel_l2"]
        results["data"] = sorted({*results.get("data", []), data})
        results["machine"] = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                              "threads": torch.get_num_threads(), "torch": torch.__version__,
                              "python": platform.python_version()}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, results)
        plot(r, data, results_dir / f"{mode}_{data}.png")
    print(json.dumps({k: v for k, v in results.items() if k.endswith("rel_l2")}, indent=1))
    print(markdown_table(results))
    if args.gain or args.seeds:
        print(gains_table(gains))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
