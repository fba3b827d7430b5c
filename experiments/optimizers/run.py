"""Test error of SFNO on ns2d_small per optimizer rule, three seeds each (see README.md here).

    python experiments/optimizers/run.py --quick            # sweeps, then writes results/quick.json
    python experiments/optimizers/run.py --quick --collect  # only gathers finished runs

Runs ``python train.py -m experiment=sfno_quick optimizer=<rules> seed=<s>`` once per seed, so that
every rule has a result after each seed; a run whose ``metrics.json`` exists is not run again,
so an interrupted sweep continues where it stopped. Writes ``results/quick.json`` (mean ± std of
the test relative L2 per rule, and every run) and ``results/quick_loss.png`` (training loss and
validation relative L2 against the step, mean over seeds per rule).

    python experiments/optimizers/run.py --quick --rules adamw,hybrid_auon   # rerun some rules only
    python experiments/optimizers/run.py --smoke   # every rule, one seed, experiment=sfno_tiny (seconds), into --out or a temp dir

A rule with no run on disk keeps its entry of the existing ``results/quick.json``, marked
``"carried_over": true`` (its runs were made by an earlier version of the code).
"""
from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from neuropde.data.store import atomic_write_json

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE.parent))  # experiments/: study.py
from study import study_dirs  # noqa: E402
ROOT = HERE.parents[1]
RULES = ("adamw", "muon", "auon", "hybrid_auon", "root", "muon_randomized")
SEEDS = (0, 1, 2)
# --smoke: the same sweep and collection with experiment=sfno_tiny and one seed
MODES = {"quick": {"experiment": "sfno_quick", "seeds": SEEDS, "extra": []},
         "smoke": {"experiment": "sfno_tiny", "seeds": (0,), "extra": ["trainer.max_epochs=1"]}}


def run_dir(out: Path, rule: str, seed: int) -> Path:
    return out / f"{rule}_seed{seed}"


def sweep(out: Path, rules: tuple[str, ...], mode: str = "quick") -> None:
    """Launch the missing (rule, seed) runs, one Hydra multirun per seed."""
    for seed in MODES[mode]["seeds"]:
        missing = [r for r in rules if not (run_dir(out, r, seed) / "metrics.json").exists()]
        if not missing:
            continue
        # hydra.sweep.subdir names each run by rule and seed so the collection step finds it
        cmd = [sys.executable, str(ROOT / "train.py"), "-m", f"experiment={MODES[mode]['experiment']}",
               f"optimizer={','.join(missing)}", f"seed={seed}", *MODES[mode]["extra"],
               f"hydra.sweep.dir={out}", "hydra.sweep.subdir=${hydra:runtime.choices.optimizer}_seed${seed}"]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)


def read_curves(path: Path) -> dict[str, list[tuple[int, float]]]:
    """``{metric: [(step, value), ...]}`` from a run's CSV log, for the training loss and val rel L2."""
    curves: dict[str, list] = {"train/loss": [], "val/rel_l2": []}
    log = path / "logs" / "metrics.csv"
    if not log.exists():
        return curves
    with open(log) as f:
        for row in csv.DictReader(f):
            for key in curves:
                if row.get(key):
                    curves[key].append((int(row["step"]), float(row[key])))
    return curves


def plot(runs: dict, file: Path, experiment: str = "sfno_quick") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key in zip(axes, ("train/loss", "val/rel_l2")):
        for rule, by_seed in runs.items():
            curves = [r["curves"][key] for r in by_seed if r["curves"][key]]
            if not curves:
                continue
            n = min(len(c) for c in curves)
            steps = [s for s, _ in curves[0][:n]]
            mean = [statistics.fmean(c[i][1] for c in curves) for i in range(n)]
            if key == "train/loss" and n > 50:  # per-step losses are noisy: moving average over 25 steps
                w = 25
                mean = [statistics.fmean(mean[max(0, i - w + 1):i + 1]) for i in range(n)]
            ax.plot(steps, mean, label=f"{rule} ({len(curves)} seeds)")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(key)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"SFNO, experiment={experiment}: mean over seeds")
    fig.tight_layout()
    tmp = file.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(file)
    plt.close(fig)


def collect(out: Path, results_dir: Path = HERE / "results", mode: str = "quick") -> dict:
    runs: dict[str, list] = {}
    for rule in RULES:
        for seed in MODES[mode]["seeds"]:
            path = run_dir(out, rule, seed)
            if not (path / "metrics.json").exists():
                continue
            metrics = json.loads((path / "metrics.json").read_text())
            runs.setdefault(rule, []).append({"seed": seed, "test_rel_l2": metrics["test/rel_l2"],
                                              "curves": read_curves(path), "dir": str(path)})
    summary = {}
    for rule, by_seed in runs.items():
        errs = [r["test_rel_l2"] for r in by_seed]
        summary[rule] = {"test_rel_l2_mean": statistics.fmean(errs),
                         "test_rel_l2_std": statistics.stdev(errs) if len(errs) > 1 else float("nan"),
                         "seeds": len(errs), "runs": {r["seed"]: r["test_rel_l2"] for r in by_seed}}
    results_dir.mkdir(parents=True, exist_ok=True)
    if runs:
        # a partial rerun gets its own plot: the curves of carried-over rules are not on disk
        partial = set(runs) != set(RULES)
        plot(runs, results_dir / (f"{mode}_loss_rerun.png" if partial else f"{mode}_loss.png"),
             MODES[mode]["experiment"])
    previous = results_dir / f"{mode}.json"
    if previous.exists():
        for rule, entry in json.loads(previous.read_text())["rules"].items():
            if rule not in summary:
                summary[rule] = {**entry, "carried_over": True}
    if "adamw" in summary:
        for rule, s in summary.items():
            s["ratio_to_adamw"] = s["test_rel_l2_mean"] / summary["adamw"]["test_rel_l2_mean"]
    return summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--quick", action="store_true", help="experiment=sfno_quick (CPU-sized)")
    g.add_argument("--smoke", action="store_true", help="every rule, one seed, sfno_tiny (seconds), into --out or a temp dir")
    p.add_argument("--collect", action="store_true", help="only gather finished runs")
    p.add_argument("--rules", default=",".join(RULES), help="comma-separated optimizer configs to run")
    p.add_argument("--out", default=None, help="where the run dirs go (default: runs/quick here)")
    args = p.parse_args(argv)
    mode = "smoke" if args.smoke else "quick"
    out, results_dir = study_dirs(HERE, "optimizers", args.smoke, args.out, runs=HERE / "runs" / "quick")
    out = Path(out).resolve()
    t0 = time.perf_counter()
    if not args.collect:
        unknown = set(args.rules.split(",")) - set(RULES)
        if unknown:
            p.error(f"unknown rules {sorted(unknown)}; choose from {RULES}")
        sweep(out, tuple(args.rules.split(",")), mode)
    summary = collect(out, results_dir, mode)
    results = {"experiment": MODES[mode]["experiment"], "rules": summary,
               "sweep_wall_seconds": None if args.collect else round(time.perf_counter() - t0, 1),
               "machine": {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                           "torch": torch.__version__, "python": platform.python_version()}}
    atomic_write_json(results_dir / f"{mode}.json", results)
    for rule, s in summary.items():
        print(f"{rule:12s} {s['test_rel_l2_mean']:.3e} ± {s['test_rel_l2_std']:.1e}  ({s['seeds']} seeds)")
    print(f"wrote {results_dir / f'{mode}.json'}")


if __name__ == "__main__":
    main()
