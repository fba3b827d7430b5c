"""LSM against FNO at matched parameters and equal training time, on Darcy and Navier–Stokes
(arXiv 2301.12664; see README.md here).

    python experiments/lsm/run.py --quick   # CPU: darcy_small (85²) and ns2d_small (64²), 6 + 7 min per model
    python experiments/lsm/run.py --full    # GPU: darcy (85² from 421²) and ns2d (64² from 256²)
    python experiments/lsm/run.py --smoke   # every model and step on darcy_tiny and ns2d_tiny (seconds), into --out or a temp dir

Equal training time: every model first trains one epoch (the probe) to measure its seconds per
epoch on this machine; its real run then gets ``floor(budget / probe seconds)`` epochs of the same
one-cycle AdamW schedule, so a slow model gets fewer epochs. Test metrics come from the checkpoint
with the best validation error (the reference picks the final epoch on the test set).

A run dir holding ``metrics.json`` is not trained again (``--fresh`` removes them). Writes
``results/<mode>.json`` with ``<data>_<model>_rel_l2`` and ``<data>_<model>_params`` for every
data set (darcy, ns2d) and model (lsm, fno, and variants), plus a ``runs`` table of every run's
epochs, seconds per epoch, training seconds and test errors, and prints the README table.
"""
from __future__ import annotations

import argparse
import sys
import json
import math
import platform
import shutil
import time
from pathlib import Path

import torch

from neuropde.data.store import atomic_write_json
from neuropde.run import compose_config, train

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE.parent))  # experiments/: study.py
from study import study_dirs  # noqa: E402

# Shared by every run: the quick experiments' optimiser and schedule.
COMMON = ["scheduler=onecycle", "optimizer=adamw", "optimizer.lr=3e-3", "logger=none",
          "plot_every_n_epochs=1000", "trainer.enable_progress_bar=false"]
DATA = {"quick": {"darcy": ["data=darcy_small"], "ns2d": ["data=ns2d_small"]},
        "full": {"darcy": ["data=darcy"], "ns2d": ["data=ns2d"]},
        "smoke": {"darcy": ["data=darcy_tiny"], "ns2d": ["data=ns2d_tiny"]}}
# Budget in seconds of training per model (GPU figures are a guess until measured there).
BUDGET = {"quick": {"darcy": 360, "ns2d": 420}, "full": {"darcy": 600, "ns2d": 900}, "smoke": {"darcy": 0.01, "ns2d": 0.01}}

# Patch size per data set: Darcy's 85² is padded to 96² = 16·6, ns2d's 64² is 16·4 (as the reference).
PATCH = {"darcy": "[6,6]", "ns2d": "[4,4]"}


def models(mode: str, data: str) -> dict[str, list[str]]:
    """Model settings by name. Quick: a slim LSM (width 16, 1.21 M parameters) against FNOs of
    the same size; full: the paper's LSM (width 64, 19.2 M) against the FNO paper's setting."""
    lsm = ["model=lsm", f"model.net.patch_size={PATCH[data]}"]
    if mode == "smoke":  # the quick mode's models at test widths (darcy_tiny 29², ns2d_tiny 32²)
        lsm = ["model=lsm", "model.net.patch_size=[2,2]", "model.net.n_scales=3", "model.net.n_heads=4"]
        return {"lsm": lsm + ["model.net.width=8"],
                "lsm_groupnorm": lsm + ["model.net.width=8", "model.net.norm=group"],
                "fno": ["model=fno", "model.net.width=8", "model.net.modes=[6,6]"],
                "fno_modes16": ["model=fno", "model.net.width=8", "model.net.modes=[8,8]"]}
    if mode == "quick":
        return {"lsm": lsm + ["model.net.width=16"],
                "lsm_groupnorm": lsm + ["model.net.width=16", "model.net.norm=group"],
                "fno": ["model=fno", "model.net.width=42"],                                   # 12×12 modes
                "fno_modes16": ["model=fno", "model.net.width=32", "model.net.modes=[16,16]"]}
    return {"lsm": lsm + ["model.net.width=64"],
            "fno": ["model=fno", "model.net.width=32", "model.net.modes=[24,24]"]}


def run_once(overrides: list[str], run: Path, fresh: bool) -> dict:
    """Train under ``overrides`` into ``run`` (or read its finished metrics)."""
    if fresh and run.exists():
        shutil.rmtree(run)
    if (run / "metrics.json").exists():
        return json.loads((run / "metrics.json").read_text())
    t0 = time.perf_counter()
    metrics = train(compose_config("train", overrides + [f"run_dir={run}"]))
    print(f"{run.relative_to(run.parents[2])}: {metrics['epochs']} epochs in {time.perf_counter() - t0:.0f} s, "
          f"test rel. L2 {metrics['test/rel_l2']:.4f}", flush=True)
    return metrics


def markdown_table(results: dict) -> str:
    rows = ["| data | model | parameters | epochs | s per epoch | training s | test rel. L2 | test rel. H1 |",
            "|---|---|---|---|---|---|---|---|"]
    for r in results["runs"]:
        rows.append(f"| {r['data']} | `{r['model']}` | {r['params']:,} | {r['epochs']} | {r['sec_per_epoch']:.1f} "
                    f"| {r['train_seconds']:.0f} | {r['rel_l2']:.4f} | {r['h1']:.4f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--quick", action="store_true", help="CPU-sized: darcy_small and ns2d_small")
    g.add_argument("--full", action="store_true", help="GPU-sized: darcy and ns2d")
    g.add_argument("--smoke", action="store_true", help="every model at test sizes (seconds), into --out or a temp dir")
    p.add_argument("--data", nargs="*", default=["darcy", "ns2d"], choices=["darcy", "ns2d"])
    p.add_argument("--models", nargs="*", default=None, help="a subset of the model names (default: all)")
    p.add_argument("--budget", type=float, default=None, help="training seconds per model (default: per data set)")
    p.add_argument("--out", default=None, help="where run dirs go (default: runs/ here)")
    p.add_argument("--fresh", action="store_true", help="retrain even where metrics.json exists")
    args = p.parse_args(argv)
    mode = "quick" if args.quick else "smoke" if args.smoke else "full"
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    args.out, results_dir = study_dirs(HERE, "lsm", args.smoke, args.out)
    path = results_dir / f"{mode}.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    done = {(r["data"], r["model"]): r for r in results.get("runs", [])}
    for data in args.data:
        budget = args.budget or BUDGET[mode][data]
        for name, settings in models(mode, data).items():
            if args.models and name not in args.models:
                continue
            overrides = COMMON + DATA[mode][data] + settings + [f"trainer.accelerator={device}"]
            root = Path(args.out) / mode / data
            probe = run_once(overrides + ["trainer.max_epochs=1"], root / f"{name}_probe", args.fresh)
            epochs = max(1, math.floor(budget / probe["sec_per_epoch"]))
            m = run_once(overrides + [f"trainer.max_epochs={epochs}"], root / name, args.fresh)
            done[(data, name)] = {"data": data, "model": name, "params": m["params"], "epochs": m["epochs"],
                                  "budget_s": budget, "probe_sec_per_epoch": probe["sec_per_epoch"],
                                  "sec_per_epoch": m["sec_per_epoch"], "train_seconds": m["train_seconds"],
                                  "rel_l2": m["test/rel_l2"], "h1": m["test/h1"], "overrides": settings}
            results[f"{data}_{name}_rel_l2"] = m["test/rel_l2"]
            results[f"{data}_{name}_params"] = m["params"]
            results["runs"] = sorted(done.values(), key=lambda r: (r["data"], r["model"]))
            results["machine"] = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                                  "threads": torch.get_num_threads(), "torch": torch.__version__,
                                  "python": platform.python_version()}
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, results)  # after every run, so a stopped study keeps what it has
    print(json.dumps({k: v for k, v in results.items() if k not in ("runs", "machine")}, indent=1))
    print(markdown_table(results))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
