"""Does the tiny DCDM model's advantage over CG on an unseen domain hold across seeds? (issue 29)

Trains ``experiment=dcdm_tiny`` (30 epochs, one-cycle, lr 3e-3: the unit test's run) with seeds
0..N-1, then solves 2 systems on the unseen ``smoke_like_closed`` domain at 16² with the learned
directions and with CG (``predict.py`` with ``solve.*``), and records iterations and fallbacks.

    python experiments/dcdm/seeds.py              # 5 seeds (4 min here on one thread)
    python experiments/dcdm/seeds.py --smoke      # 2 seeds, 2 epochs, into a temporary folder
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from neuropde.run import compose_config, predict, train  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds, args.epochs = 2, 2
    out = Path(args.out or (tempfile.mkdtemp(prefix="dcdm_seeds_") if args.smoke else HERE / "results"))
    work = Path(tempfile.mkdtemp(prefix="dcdm_seeds_work_"))
    rows = []
    for seed in range(args.seeds):
        run = work / f"seed{seed}"
        metrics = train(compose_config("train", ["experiment=dcdm_tiny", f"trainer.max_epochs={args.epochs}",
                                                 "scheduler=onecycle", "optimizer.lr=3e-3", "logger=none",
                                                 f"seed={seed}", f"run_dir={run}"]))
        m = predict(compose_config("predict", [f"ckpt={run}", "solve.domain=smoke_like_closed", "solve.resolution=16",
                                               "solve.systems=2", "n_plots=0", f"run_dir={work / f'solve{seed}'}"]))
        row = {"seed": seed, "test/rel_l2": metrics["test/rel_l2"], "dcdm_iterations": m["dcdm_iterations"],
               "cg_iterations": m["cg_iterations"], "dcdm_fallbacks": m["dcdm_fallbacks"],
               "converged": all(m["dcdm_converged"]) and all(m["cg_converged"])}
        row["ratio"] = statistics.mean(m["dcdm_iterations"]) / statistics.mean(m["cg_iterations"])
        rows.append(row)
        print(json.dumps(row), flush=True)
    ratios = [r["ratio"] for r in rows]
    result = {"epochs": args.epochs, "domain": "smoke_like_closed", "resolution": 16, "runs": rows,
              "ratio_mean": statistics.mean(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
              "seeds_fewer_than_cg": sum(r < 1 for r in ratios)}
    out.mkdir(parents=True, exist_ok=True)
    (out / ("seeds_smoke.json" if args.smoke else "seeds.json")).write_text(json.dumps(result, indent=2))
    print(f"DCDM / CG iterations over {len(rows)} seeds: mean {result['ratio_mean']:.2f}, "
          f"range {result['ratio_min']:.2f}-{result['ratio_max']:.2f}; fewer than CG in {result['seeds_fewer_than_cg']}")


if __name__ == "__main__":
    main()
