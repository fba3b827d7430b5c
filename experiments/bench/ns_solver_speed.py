"""Throughput of the Navier–Stokes solver: field-steps per second (batch × steps / time).

Times ``NavierStokes2D.step`` in a loop and ``simulate`` over the same number of steps, after a
warm-up, as the median of several repeats (CUDA is synchronised around each timing).

    python experiments/bench/ns_solver_speed.py                       # 64 fields at 64², 16 at 256²
    python experiments/bench/ns_solver_speed.py 128x64 8x512 --device cuda --dtype float64
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from neuropde.pde import NavierStokes2D, fno_forcing, gaussian_random_field


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn, device, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench(batch: int, n: int, device: torch.device, dtype, steps: int, repeats: int, dt: float) -> dict:
    solver = NavierStokes2D(n, nu=1e-3, forcing=fno_forcing(n), dtype=dtype, device=device)
    w0 = gaussian_random_field(batch, n, generator=torch.Generator().manual_seed(0), dtype=dtype, device=device)
    w_hat0 = solver.to_spectral(w0)

    def run_steps():
        w_hat = w_hat0
        for _ in range(steps):
            w_hat = solver.step(w_hat, dt)
        return w_hat

    def run_simulate():
        return solver.simulate(w0, dt, [steps * dt])

    with torch.no_grad():
        run_steps()  # warm-up: FFT plans, allocator, kernels
        run_simulate()
        t_step = _median_time(run_steps, device, repeats)
        t_sim = _median_time(run_simulate, device, repeats)
    return {"step": batch * steps / t_step, "simulate": batch * steps / t_sim, "ms_per_step": 1e3 * t_step / steps}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("configs", nargs="*", default=["64x64", "16x256"], help="BATCHxRESOLUTION entries")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... or auto")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--steps", type=int, default=20, help="steps per timing")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--dt", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = p.parse_args()

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device {name}, {args.dtype}, {args.steps} steps x median of {args.repeats}")
    print(f"{'batch':>6} {'n':>5} {'ms/step':>9} {'step fields*steps/s':>20} {'simulate fields*steps/s':>24}")
    for cfg in args.configs:
        batch, n = (int(v) for v in cfg.lower().split("x"))
        r = bench(batch, n, device, dtype, args.steps, args.repeats, args.dt)
        print(f"{batch:>6} {n:>5} {r['ms_per_step']:>9.2f} {r['step']:>20.1f} {r['simulate']:>24.1f}")


if __name__ == "__main__":
    main()
