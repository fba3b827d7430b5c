"""Spectral-Refiner study: does residual fine-tuning of the SFNO output operator lower the error,
and does the residual norm estimate the error? (arXiv 2405.17211; see README.md here.)

    python experiments/spectral_refiner/run.py --quick [--ckpt RUN_DIR]   # CPU, sfno_quick setting
    python experiments/spectral_refiner/run.py --full  [--ckpt RUN_DIR]   # GPU, model=sfno data=ns2d
    python experiments/spectral_refiner/run.py --smoke [--out DIR]        # the same steps at sfno_tiny sizes (seconds)

Trains the model (unless --ckpt names a finished run), then predicts the test split with
refinement at the training grid and zero-shot at 256², and writes results/<mode>.json.
"""
from __future__ import annotations

import argparse
import sys
import json
import platform
import time
from pathlib import Path

import torch

from neuropde.data.store import atomic_write_json
from neuropde.run import compose_config, predict, train

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE.parent))  # experiments/: study.py
from study import study_dirs  # noqa: E402

MODES = {
    # at 256² a CPU refines one trajectory in about a minute: the quick zero-shot check takes the
    # first window of the first 4 test trajectories (the same trajectories, seeded by index)
    "quick": {"train": ["experiment=sfno_quick"],
              "zero_shot": ["data.resolution=256", "data.window.eval_stride=null", "data.samples.test=4"]},
    "full": {"train": ["model=sfno", "data=ns2d"], "zero_shot": ["data.resolution=256"]},
    # --smoke: the same steps at test sizes (ns2d_tiny, 32²; zero-shot at 48², 2 refinement steps)
    "smoke": {"train": ["experiment=sfno_tiny", "logger=none"], "refine": ["refine.steps=2", "n_plots=1"],
              "zero_shot": ["data.resolution=48", "data.window.eval_stride=null", "data.samples.test=2"]},
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--quick", action="store_true", help="CPU, sfno_quick setting (<= 15 min on 2 cores)")
    g.add_argument("--full", action="store_true", help="GPU, model=sfno data=ns2d")
    g.add_argument("--smoke", action="store_true", help="every step at test sizes (seconds), into --out or a temp dir")
    p.add_argument("--ckpt", help="a finished training run (dir or .ckpt) to reuse instead of training")
    p.add_argument("--out", default=None, help="where run dirs go (default: runs/ here)")
    args = p.parse_args(argv)
    mode = "quick" if args.quick else "smoke" if args.smoke else "full"
    out, results_dir = study_dirs(HERE, "refiner", args.smoke, args.out)
    out = Path(out) / mode
    refine = ["refine.enabled=true", *MODES[mode].get("refine", [])]
    t0 = time.perf_counter()

    ckpt = args.ckpt
    train_metrics = {}
    if ckpt is None:
        ckpt = str(out / "train")
        train_metrics = train(compose_config("train", MODES[mode]["train"] + [f"run_dir={ckpt}"]))
    t_trained = time.perf_counter()

    on_grid = predict(compose_config("predict", [f"ckpt={ckpt}", *refine, f"run_dir={out / 'refine'}"]))
    t1 = time.perf_counter()
    zero = predict(compose_config("predict", [f"ckpt={ckpt}", *refine, f"run_dir={out / 'refine_256'}"]
                           + ["+" + o for o in MODES[mode]["zero_shot"]]))
    t2 = time.perf_counter()

    results = {
        "rel_l2": on_grid["test/rel_l2"],
        "rel_l2_refined": on_grid["test/rel_l2_refined"],
        "rel_l2_persistence": on_grid["test/rel_l2_persistence"],
        "rel_l2_zero_shot_256": zero["test/rel_l2"],
        "rel_l2_zero_shot_256_refined": zero["test/rel_l2_refined"],
        "estimate_spearman": on_grid["estimate_spearman"],
        "estimate_spearman_256": zero["estimate_spearman"],
        "seconds_per_refined_sample": on_grid["seconds_per_refined_sample"],
        "seconds_per_refined_sample_256": zero["seconds_per_refined_sample"],
        "samples": on_grid["samples"], "samples_256": zero["samples"],
        "train_resolution": on_grid["trained_resolution"],
        "ckpt": on_grid["ckpt"], "train_test_rel_l2": train_metrics.get("test/rel_l2"),
        "wall_seconds": {"train": round(t_trained - t0, 1), "refine": round(t1 - t_trained, 1),
                         "zero_shot_256": round(t2 - t1, 1), "total": round(t2 - t0, 1)},
        "machine": {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                    "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version()},
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(results_dir / f"{mode}.json", results)
    print(json.dumps({k: v for k, v in results.items() if not isinstance(v, dict)}, indent=2))
    print(f"wrote {results_dir / f'{mode}.json'}")


if __name__ == "__main__":
    main()
