"""SDGD PINNs in 10² to 10⁵ dimensions: accuracy after a fixed budget, and the cost of one step
against the full Laplacian (arXiv 2307.12306; README.md here).

    python experiments/sdgd/run.py --quick   # CPU: train at d = 100; time steps at d = 10², 10³, 10⁴
    python experiments/sdgd/run.py --full    # GPU: train and time at d = 10², 10³, 10⁴, 10⁵

Accuracy: ``python train.py experiment=sdgd_pinn_quick`` (Poisson, two-body solution, d = 100) and,
in ``--full``, the published setting (Allen–Cahn, Poisson, sine-Gordon; B = 100, 10,000 steps) at
every d. A run dir holding ``metrics.json`` is reused.

Speed: one training step (new points, loss, backward, Adam) of the reference network
(d → 128 → 128 → 128 → 1) with N_r = 100 points, for SDGD (unbiased estimator, B = 100) and for
the exact Laplacian (all d dimensions, checkpointed chunks of 1,000), each measured in its own
process: warm-up steps excluded, median of the timed ones, and the peak memory of that process
(``torch.cuda.max_memory_allocated`` on a GPU, the peak resident set size on a CPU, which includes
the ~0.4 GB of the Python process itself). A process that runs out of memory is recorded as "oom".

Writes ``results/<mode>.json``: ``poisson_d100_rel_l2``, ``sec_per_iter`` and ``peak_memory_mb`` by
estimator and d, ``sdgd_vs_full_speedup_d10000`` and the runs' metrics.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MODES = {
    "quick": {"dims": (100, 1_000, 10_000), "device": "cpu",
              # the published 10,000 steps (sdgd_pinn_quick's own length)
              "train": {"poisson_d100": ["experiment=sdgd_pinn_quick", "trainer.max_epochs=10"],
                        # the published recipe as it is (Adam 1e-3, the network on x), for comparison
                        "poisson_d100_adam": ["experiment=sdgd_pinn_quick", "trainer.max_epochs=10", "optimizer=adam",
                                              "optimizer.lr=1e-3", "model.net.input_scale=1.0"]},
              # timed steps per (estimator, d): the exact Laplacian at 10⁴ D takes about a minute a step here
              "steps": {"sdgd": 10, "full": {100: 10, 1_000: 3, 10_000: 2}}},
    "full": {"dims": (100, 1_000, 10_000, 100_000), "device": "cuda",
             "train": {f"{op}_d{d}": ["experiment=sdgd_pinn_quick", f"data.operator={op}", f"data.dim={d}",
                                      "model.task.batch_dims=100", "trainer.max_epochs=10", "trainer.accelerator=gpu",
                                      "data.sampler=radius"]
                       for op in ("poisson", "allen_cahn", "sine_gordon") for d in (100, 1_000, 10_000, 100_000)},
             "steps": {"sdgd": 20, "full": {100: 20, 1_000: 10, 10_000: 5, 100_000: 2}}},
}
WARMUP = 1


# ------------------------------------------------------------------------------------ one step
def measure(dim: int, estimator: str, steps: int, device: str, batch_dims: int = 100, points: int = 100,
            chunk: int = 1000) -> dict:
    """Seconds per training step (median over ``steps`` after ``WARMUP``) and peak memory, here."""
    from neuropde.models.sdgd_pinn import BallPINN, residual_loss
    from neuropde.pde.highdim import BallProblem, sample_ball
    from neuropde.tasks.pinn import step_generator

    dev = torch.device(device)
    torch.manual_seed(0)
    net = BallPINN(dim).to(dev)
    problem = BallProblem(dim, "poisson")
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    times = []
    for step in range(WARMUP + steps):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        g = step_generator(0, step, dev)
        x = sample_ball(points, dim, "volume", g, device=dev)
        loss, _ = residual_loss(net, problem, x, estimator, batch_dims, g, chunk)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if step >= WARMUP:
            times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)   # Linux: kB
    return {"sec_per_iter": statistics.median(times), "it_per_sec": 1 / statistics.median(times),
            "peak_memory_mb": round(peak, 1), "steps": steps, "memory_kind": "cuda_allocated" if dev.type == "cuda"
            else "process_peak_rss"}


def measure_in_subprocess(dim: int, estimator: str, steps: int, device: str, timeout: float) -> dict | str:
    """:func:`measure` in a fresh process (its own peak memory; an out-of-memory kill stays there)."""
    cmd = [sys.executable, __file__, "--measure", str(dim), estimator, str(steps), device]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return "timeout"
    if done.returncode != 0:
        tail = (done.stderr or "")[-400:]
        if done.returncode in (-9, 137) or "out of memory" in tail.lower() or "CUDA out of memory" in tail:
            return "oom"
        raise RuntimeError(f"measurement d={dim} {estimator} failed:\n{tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------- train
def train_runs(mode: str, out: Path) -> dict:
    from neuropde.run import compose_config, train

    results = {}
    for name, overrides in MODES[mode]["train"].items():
        run = out / mode / name
        if not (run / "metrics.json").exists():
            t0 = time.perf_counter()
            train(compose_config("train", overrides + [f"run_dir={run}"]))
            print(f"{name}: trained in {time.perf_counter() - t0:.0f} s", flush=True)
        metrics = json.loads((run / "metrics.json").read_text())
        results[name] = {k: metrics.get(k) for k in ("test/rel_l2", "test/rel_l1", "test/residual_rms",
                                                      "train_seconds", "sec_per_epoch", "epochs")}
        results[name]["run_dir"] = str(run)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--quick", action="store_true", help="CPU: d up to 10^4")
    g.add_argument("--full", action="store_true", help="GPU: d up to 10^5")
    g.add_argument("--measure", nargs=4, metavar=("DIM", "ESTIMATOR", "STEPS", "DEVICE"), help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(HERE / "runs"))
    p.add_argument("--skip-train", action="store_true", help="only the step timings")
    p.add_argument("--reuse-timings", action="store_true",
                   help="take the step timings from the existing results/<mode>.json instead of measuring again")
    args = p.parse_args()
    if args.measure:
        dim, estimator, steps, device = args.measure
        print(json.dumps(measure(int(dim), estimator, int(steps), device)))
        return
    mode = "quick" if args.quick else "full"
    cfg = MODES[mode]
    device = cfg["device"] if cfg["device"] == "cpu" or torch.cuda.is_available() else "cpu"
    out = Path(args.out)
    t0 = time.perf_counter()
    runs = {} if args.skip_train else train_runs(mode, out)

    timings: dict[str, dict] = {"sdgd_unbiased_B100": {}, "full": {}}
    previous = HERE / "results" / f"{mode}.json"
    if args.reuse_timings:
        if not previous.exists():
            raise SystemExit(f"--reuse-timings: {previous} does not exist; run without it first")
        timings = json.loads(previous.read_text())["timings"]
    for dim in () if args.reuse_timings else cfg["dims"]:
        for name, estimator in (("sdgd_unbiased_B100", "unbiased"), ("full", "full")):
            steps = cfg["steps"]["sdgd"] if estimator != "full" else cfg["steps"]["full"][dim]
            r = measure_in_subprocess(dim, estimator, steps, device, timeout=900)
            timings[name][str(dim)] = r
            shown = r if isinstance(r, str) else f"{r['sec_per_iter']:.4g} s/step, {r['peak_memory_mb']:.0f} MB"
            print(f"d={dim:>6} {name:20s} {shown}", flush=True)

    def speedup(dim: int):
        s, f = timings["sdgd_unbiased_B100"][str(dim)], timings["full"][str(dim)]
        if isinstance(f, str):
            return f          # "oom" or "timeout": the full Laplacian did not run
        return f["sec_per_iter"] / s["sec_per_iter"]

    results = {
        "mode": mode,
        "poisson_d100_rel_l2": runs.get("poisson_d100", {}).get("test/rel_l2"),
        "poisson_d100_adam_rel_l2": runs.get("poisson_d100_adam", {}).get("test/rel_l2"),
        "sec_per_iter": {name: {d: (v if isinstance(v, str) else v["sec_per_iter"]) for d, v in t.items()}
                         for name, t in timings.items()},
        "peak_memory_mb": {name: {d: (v if isinstance(v, str) else v["peak_memory_mb"]) for d, v in t.items()}
                           for name, t in timings.items()},
        "sdgd_vs_full_speedup": {str(d): speedup(d) for d in cfg["dims"]},
        "sdgd_vs_full_speedup_d10000": speedup(10_000),
        "timings": timings, "runs": runs,
        "step_setting": {"points": 100, "batch_dims": 100, "width": 128, "depth": 3, "dim_chunk": 1000,
                         "optimizer": "adam", "warmup_steps": WARMUP},
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "machine": {"device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
                    "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version()},
    }
    from neuropde.data.store import atomic_write_json

    (HERE / "results").mkdir(exist_ok=True)
    atomic_write_json(HERE / "results" / f"{mode}.json", results)
    print(json.dumps({k: results[k] for k in ("poisson_d100_rel_l2", "sdgd_vs_full_speedup", "sec_per_iter")}, indent=1))


if __name__ == "__main__":
    main()
