"""SDGD PINNs in 10² to 10⁵ dimensions: accuracy after a fixed budget, and the cost of one step
against the full Laplacian (arXiv 2307.12306; README.md here).

    python experiments/sdgd/run.py --quick   # CPU: train at d = 100; time steps at d = 10², 10³, 10⁴
    python experiments/sdgd/run.py --full    # GPU: train and time at d = 10², 10³, 10⁴, 10⁵
    python experiments/sdgd/run.py --d1000   # CPU: SDGD (B = 100) against the exact Laplacian at d = 1,000,
                                             # equal training time, side by side on the two cores
    python experiments/sdgd/run.py --smoke   # the --quick steps at test sizes (seconds), into --out or a temp dir

Accuracy: ``python train.py experiment=sdgd_pinn_quick`` (Poisson, two-body solution, d = 100) and,
in ``--full``, the published setting (Allen–Cahn, Poisson, sine-Gordon; B = 100, 10,000 steps) at
every d. A run dir holding ``metrics.json`` is reused.

Speed: one training step (new points, loss, backward, Adam) of the reference network
(d → 128 → 128 → 128 → 1) with N_r = 100 points, for SDGD (unbiased estimator, B = 100) and for
the exact Laplacian (all d dimensions, checkpointed chunks of 1,000), each measured in its own
process: warm-up steps excluded, median of the timed ones, and the peak memory of that process
(``torch.cuda.max_memory_allocated`` on a GPU, the peak resident set size on a CPU, which includes
the ~0.4 GB of the Python process itself). A process that runs out of memory is recorded as "oom".

Equal time (``--d1000``): at d = 1,000 SDGD samples B = 100 of the 1,000 dimensions, so the
estimate differs from the Laplacian (at d = 100, ``sdgd_pinn_quick``'s B = 100 *is* the exact
Laplacian). Both runs use ``sdgd_pinn_quick``'s recipe (Muon 3e-3, input sqrt(d)·x, lr decaying linearly
to 0) with ``data.dim=1000``: ``model.task.estimator=unbiased`` with B = 100 and
``model.task.estimator=full``. Equal wall-clock time is set by step counts: both estimators' seconds per
step are first measured side by side (each process pinned to its own core, ``OMP_NUM_THREADS=1``); then
the two trainings run side by side, pinned the same way, each under ``trainer.max_time`` = the budget
(training steps and its 5 validations: the same points, the same cost for both), with a learning-rate
schedule as long as the calibrated step time fits in 90 % of the budget (so that it runs to its end
unless the machine gets slower than calibrated; the steps reached are reported). Resumable: the
calibration is kept in ``runs/d1000/calibration.json`` and each run uses ``resume=auto``.

Writes ``results/<mode>.json``: ``poisson_d100_rel_l2``, ``sec_per_iter`` and ``peak_memory_mb`` by
estimator and d, ``sdgd_vs_full_speedup_d10000`` and the runs' metrics.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE.parent))  # experiments/: study.py
from study import study_dirs  # noqa: E402
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
# --smoke: the quick runs (the same experiment and optimizer options) cut to 5 steps at d = 10, one timed step at d = 100
_TINY = ["data.dim=10", "trainer.enable_progress_bar=false", "data.steps_per_epoch=5", "trainer.max_epochs=1", "data.samples.val=50",
         "data.samples.test=50", "model.task.batch_dims=4", "logger=none"]
MODES["smoke"] = {"dims": (100,), "device": "cpu",
                  "train": {name: overrides + _TINY for name, overrides in MODES["quick"]["train"].items()},
                  "steps": {"sdgd": 1, "full": {100: 1}}}
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


# ------------------------------------------------------------------------ d = 1,000, equal time
D1000 = {"dim": 1_000, "batch_dims": 100, "epochs": 5, "residual_points": 50,
         "runs": {"sdgd_unbiased_B100": ["model.task.estimator=unbiased", "model.task.batch_dims=100"],
                  "full": ["model.task.estimator=full"]}}


def _pinned(cmd: list[str], core: int) -> list[str]:
    """``cmd`` on one core with one thread (taskset where available)."""
    import shutil

    return (["taskset", "-c", str(core)] if shutil.which("taskset") and len(os.sched_getaffinity(0)) > 1 else []) + cmd


def _side_by_side(cmds: dict[str, list[str]], logs: Path | None = None, timeout: float | None = None) -> dict:
    """Start every command at once (one core each), wait for all; stdout of each by name."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = {}
    t0 = time.perf_counter()
    for core, (name, cmd) in enumerate(cmds.items()):
        out = open(logs / f"{name}.log", "a") if logs else subprocess.PIPE
        procs[name] = (subprocess.Popen(_pinned(cmd, core), stdout=out, stderr=subprocess.STDOUT if logs else
                                        subprocess.PIPE, text=True, cwd=ROOT, env=env), out)
    results = {}
    for name, (proc, out) in procs.items():
        stdout, stderr = proc.communicate(timeout=timeout)
        if logs:
            out.close()
        if proc.returncode != 0:
            raise RuntimeError(f"{name} failed ({proc.returncode}):\n{(stderr or '')[-800:]}"
                               + (f" (log {logs / (name + '.log')})" if logs else ""))
        results[name] = stdout
        results[f"{name}:seconds"] = time.perf_counter() - t0   # an upper bound: they were waited for in order
    return results


def d1000_study(out: Path, budget: float, seed: int) -> dict:
    """SDGD (unbiased, B = 100) and the exact Laplacian at d = 1,000 for ``budget`` seconds of training each."""
    from neuropde.data.store import atomic_write_json

    out = out / "d1000" / f"budget{int(budget)}_seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    calib_file = out / "calibration.json"
    if not calib_file.exists():   # seconds per step of each estimator, both measured at the same time
        cmds = {name: [sys.executable, __file__, "--measure", str(D1000["dim"]),
                       "unbiased" if name.startswith("sdgd") else "full", "20" if name.startswith("sdgd") else "5",
                       "cpu"] for name in D1000["runs"]}
        raw = _side_by_side(cmds, timeout=1800)
        atomic_write_json(calib_file, {k: json.loads(raw[k].strip().splitlines()[-1]) for k in cmds})
    calib = json.loads(calib_file.read_text())
    plan = {}
    cmds = {}
    for name, overrides in D1000["runs"].items():
        # the schedule's length: what the calibrated step time fits in 90 % of the budget (validation takes
        # some of the rest); trainer.max_time = budget ends the run if it is slower than calibrated
        steps = max(D1000["epochs"], int(0.9 * budget / calib[name]["sec_per_iter"]))
        per_epoch = -(-steps // D1000["epochs"])
        plan[name] = {"steps": per_epoch * D1000["epochs"], "steps_per_epoch": per_epoch,
                      "calibrated_sec_per_iter": calib[name]["sec_per_iter"]}
        guard = int(budget)
        cmds[name] = [sys.executable, "train.py", "experiment=sdgd_pinn_quick", f"data.dim={D1000['dim']}",
                      f"data.steps_per_epoch={per_epoch}", f"trainer.max_epochs={D1000['epochs']}", f"seed={seed}",
                      f"trainer.max_time=00:{guard // 3600:02d}:{guard % 3600 // 60:02d}:{guard % 60:02d}",
                      f"model.task.residual_points={D1000['residual_points']}", "trainer.enable_progress_bar=false",
                      f"run_dir={out / name}", "resume=auto", *overrides]
        plan[name]["command"] = " ".join(cmds[name][1:])
    todo = {n: c for n, c in cmds.items() if not (out / n / "metrics.json").exists()}
    if todo:
        print(f"d1000: training {', '.join(todo)} side by side ({budget:.0f} s each): "
              + ", ".join(f"{n} {plan[n]['steps']} steps" for n in todo), flush=True)
        done = _side_by_side(todo, logs=out)
        walls = json.loads((out / "process_seconds.json").read_text()) if (out / "process_seconds.json").exists() else {}
        walls.update({n: done[f"{n}:seconds"] for n in todo})
        atomic_write_json(out / "process_seconds.json", walls)
    runs = {}
    for name in D1000["runs"]:
        metrics = json.loads((out / name / "metrics.json").read_text())
        last = torch.load(out / name / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        runs[name] = {**plan[name], "estimator": "unbiased" if name.startswith("sdgd") else "full",
                      "B": D1000["batch_dims"] if name.startswith("sdgd") else D1000["dim"],
                      "steps_reached": int(last["global_step"]),
                      **{k: metrics.get(k) for k in ("test/rel_l2", "test/rel_l1", "test/residual_rms", "val/rel_l2",
                                                     "train_seconds", "sec_per_epoch", "epochs")},
                      "process_seconds": json.loads((out / "process_seconds.json").read_text()).get(name)
                      if (out / "process_seconds.json").exists() else None,
                      "run_dir": str(out / name)}
        runs[name]["sec_per_step_trained"] = runs[name]["train_seconds"] / max(runs[name]["steps_reached"], 1)
    return {"dim": D1000["dim"], "budget_seconds": budget, "seed": seed, "calibration": calib, "runs": runs,
            "equalised_by": "trainer.max_time = budget (training + 5 validations, both runs side by side, one core "
                            "each); schedule length = 0.9 x budget / calibrated s/step",
            "recipe": "experiment=sdgd_pinn_quick data.dim=1000 (Muon 3e-3, input sqrt(d)·x, linear decay to 0, "
                      "N_r = 100 radius-uniform points per step, Poisson two-body)"}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--quick", action="store_true", help="CPU: d up to 10^4")
    g.add_argument("--full", action="store_true", help="GPU: d up to 10^5")
    g.add_argument("--d1000", action="store_true",
                   help="CPU: SDGD (B = 100) against the exact Laplacian at d = 1,000, equal training time")
    g.add_argument("--smoke", action="store_true", help="the --quick steps at test sizes (seconds), into --out or a temp dir")
    g.add_argument("--measure", nargs=4, metavar=("DIM", "ESTIMATOR", "STEPS", "DEVICE"), help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help="where run dirs go (default: runs/ here)")
    p.add_argument("--budget", type=float, default=600.0, help="--d1000: training seconds per run")
    p.add_argument("--seed", type=int, default=0, help="--d1000: seed of both runs")
    p.add_argument("--skip-train", action="store_true", help="only the step timings")
    p.add_argument("--reuse-timings", action="store_true",
                   help="take the step timings from the existing results/<mode>.json instead of measuring again")
    args = p.parse_args(argv)
    args.out, results_dir = study_dirs(HERE, "sdgd", args.smoke, args.out)
    if args.measure:
        dim, estimator, steps, device = args.measure
        print(json.dumps(measure(int(dim), estimator, int(steps), device)))
        return
    if args.d1000:
        from neuropde.data.store import atomic_write_json

        results = d1000_study(Path(args.out), args.budget, args.seed)
        results["machine"] = {"cpu": platform.processor() or "cpu", "threads_per_run": 1, "torch": torch.__version__,
                              "cores": os.cpu_count()}
        (HERE / "results").mkdir(exist_ok=True)
        atomic_write_json(HERE / "results" / "d1000.json", results)
        print(json.dumps({n: {k: r[k] for k in ("estimator", "B", "steps_reached", "train_seconds", "test/rel_l2")}
                          for n, r in results["runs"].items()}, indent=1))
        return
    mode = "quick" if args.quick else "smoke" if args.smoke else "full"
    cfg = MODES[mode]
    device = cfg["device"] if cfg["device"] == "cpu" or torch.cuda.is_available() else "cpu"
    out = Path(args.out)
    t0 = time.perf_counter()
    runs = {} if args.skip_train else train_runs(mode, out)

    timings: dict[str, dict] = {"sdgd_unbiased_B100": {}, "full": {}}
    previous = results_dir / f"{mode}.json"
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
        "sdgd_vs_full_speedup_d10000": speedup(10_000) if 10_000 in cfg["dims"] else None,
        "timings": timings, "runs": runs,
        "step_setting": {"points": 100, "batch_dims": 100, "width": 128, "depth": 3, "dim_chunk": 1000,
                         "optimizer": "adam", "warmup_steps": WARMUP},
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "machine": {"device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
                    "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version()},
    }
    from neuropde.data.store import atomic_write_json

    results_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(results_dir / f"{mode}.json", results)
    print(json.dumps({k: results[k] for k in ("poisson_d100_rel_l2", "sdgd_vs_full_speedup", "sec_per_iter")}, indent=1))
    print(f"wrote {results_dir / f'{mode}.json'}")


if __name__ == "__main__":
    main()
