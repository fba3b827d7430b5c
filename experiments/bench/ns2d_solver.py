"""The project's 2-D Navier–Stokes solver against torch-cfd 0.2.6 at matched accuracy.

Both solve the FNO benchmark's PDE on [0, 1)²: vorticity form, ν = 1e-3, forcing
0.1 (sin 2π(x+y) + cos 2π(x+y)), no drag, pseudo-spectral with the 2/3 rule; ours steps with
RK3/CN (Spalart–Moser–Rogers, 3 stages), torch-cfd with its RK4–Crank–Nicolson (Carpenter–Kennedy,
5 stages). Their schemes differ, so equal step sizes are not equal accuracy:

1. accuracy (a few fields): from a developed state (a band-limited GRF run to t = 5), the
   relative L2 error of float32 runs at horizon T = 5 against a float64 reference (torch-cfd at
   dt = T/2000) over a list of dt; each solver's dt is the largest listed one at which it, and
   every smaller listed dt, meets the tolerance (so a lucky value past a stability limit does
   not count). Float32 because it is what is timed, and its rounding seeds the instabilities
   that a float64 run only meets later; the tolerance (1e-4) sits above both float32 floors;
2. speed (float32, the workload's batch): seconds per step, median of interleaved repeats after
   a warm-up call (perf_counter on CPU, CUDA events on GPU); ours through
   ``NavierStokes2D.stepper`` (a CUDA graph on GPU), torch-cfd through its own ``forward``;
3. headline: simulated time per wall second, fields × dt / (s per step), at each solver's own
   dt — ``ours``, ``peer`` and ``ratio`` of the workload with the smallest ratio. Field-steps/s
   (same dt for both), the error curves and the ratio at other tolerances are in the JSON too.

The band-limited initial state makes the two discretisations the same ODE system (torch-cfd
filters only the advection output, ours also band-limits its factors; identical on band-limited
states), which the script checks: both in float64 at the reference dt agree to ~1e-9.

    pip install --no-deps torch-cfd==0.2.6 einops        # benchmark-only dependency
    OMP_NUM_THREADS=1 python experiments/bench/ns2d_solver.py --device cpu   # 64 x 64², 8 x 256²
    python experiments/bench/ns2d_solver.py --device cuda                    # 64 x 256², 8 x 1024²

Writes experiments/bench/results/ns2d_solver_<device>.json (``--quick``: a smoke run,
ns2d_solver_quick_<device>.json).
"""
from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import describe, pick_device, write_result  # noqa: E402

from neuropde.cpu_memory import keep_freed_memory
from neuropde.pde import NavierStokes2D, dealias_mask, fno_forcing, gaussian_random_field  # noqa: E402

NU, L = 1e-3, 1.0
PEER_HINT = "pip install --no-deps torch-cfd==0.2.6 einops"
TOLERANCES = (1e-3, 1e-4, 1e-5)
# rfft2-layout (B, n, n/2+1) complex passes per step of ours as implemented (reads + writes, in
# units of the state's bytes; kappa = kept columns / (n/2+1) ~ 2/3), see ns2d_solver.md
STAGE_PASSES = "19 + 28*kappa (+ 3*kappa when the stage has an old N)"


def _import_peer():
    try:
        import torch_cfd  # noqa: F401
        from torch_cfd.forcings import ForcingFn, SinCosForcing
        from torch_cfd.grids import Grid
        from torch_cfd.spectral import NavierStokes2DSpectral, RK4CrankNicolsonStepper
    except ImportError as err:
        raise SystemExit(f"torch-cfd is missing ({err}); this benchmark compares against it. "
                         f"Install it for benchmarking only:\n    {PEER_HINT}") from None
    return Grid, ForcingFn, SinCosForcing, NavierStokes2DSpectral, RK4CrankNicolsonStepper


@contextlib.contextmanager
def default_dtype(dtype):
    """torch-cfd builds its meshes (and evaluates its forcing at every stage) in the default dtype."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


class Peer:
    """torch-cfd's NavierStokes2DSpectral set up as the same PDE; ``run(w_hat, dt, steps)``.

    Its SinCosForcing rebuilds the grid's meshes on the CPU at every stage; the peer gets that
    field precomputed instead (its fastest use, so the comparison does not count that cost)."""

    def __init__(self, n: int, dtype, device):
        Grid, ForcingFn, SinCosForcing, NS, RK4CN = _import_peer()

        class Precomputed(ForcingFn):
            def __init__(self, grid, field):
                super().__init__(grid, vorticity=True)
                self.field = field

            def forward(self, grid=None, velocity=None, vorticity=None, time=None):
                return self.field

        self.dtype = dtype
        with default_dtype(dtype):
            grid = Grid((n, n), domain=((0.0, L), (0.0, L)), device=device)
            # SinCosForcing's vorticity is scale (sin 2π k(x+y)/diam + cos 2π k(x+y)/diam)
            field = SinCosForcing(grid=grid, scale=0.1, diam=L, wave_number=1, vorticity=True)(grid)
            self.eq = NS(viscosity=NU, grid=grid, drag=0.0, smooth=True,
                         forcing_fn=Precomputed(grid, field.to(device)), step_fn=RK4CN()).to(device)
        if not torch.equal(self.eq.filter.bool().cpu(), dealias_mask(n)):
            # its negative-k_x band is -(int(2n/3) // 2) .. -1, floor division: it keeps k_x = -n/3
            # or one mode more than the positive band at n = 32, 48, 96, 128, 512, ...; 64, 256
            # and 1024 give the same band as ours
            raise RuntimeError(f"torch-cfd's 2/3 filter differs from ours at n = {n}; use 64, 256 or 1024")
        if (field.cpu().double() - fno_forcing(n, L)).abs().max() > 1e-6:
            raise RuntimeError("torch-cfd's forcing differs from ours")

    @torch.no_grad()
    def run(self, w_hat: torch.Tensor, dt: float, steps: int) -> torch.Tensor:
        with default_dtype(self.dtype):
            return self.eq(w_hat, dt, steps=steps)[0]


def ours_run(solver: NavierStokes2D, w_hat: torch.Tensor, dt: float, steps: int) -> torch.Tensor:
    state, advance = solver.stepper(w_hat, dt, steps, cuda_graph=False)
    advance()
    return state


def rel_l2(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a - ref).abs().pow(2).sum() / ref.abs().pow(2).sum()).sqrt().item()


def initial_state(batch: int, n: int, dtype, device, seed: int = 0) -> torch.Tensor:
    """GRF (FNO statistics) restricted to the modes the 2/3 rule keeps: spectral (B, n, n/2+1)."""
    w0 = gaussian_random_field(batch, n, L, generator=torch.Generator().manual_seed(seed), dtype=dtype, device=device)
    return torch.fft.rfft2(w0) * dealias_mask(n, device=device)


def largest_ok_dt(dts: list[float], errs: list[float], tol: float) -> float | None:
    """Largest dt such that it and every smaller dt in the list meet tol (errs finite)."""
    best = None
    for dt, e in sorted(zip(dts, errs)):
        if not (math.isfinite(e) and e <= tol):
            break
        best = dt
    return best


def accuracy_study(n: int, device, horizon: float, warm: float, fields: int, ref_steps: int,
                   counts: list[int], log) -> dict:
    """Errors at the horizon vs dt for both solvers in float32 (the timed precision: it seeds the
    instabilities a float64 run would only meet later) against a float64 reference, from a
    developed state."""
    f64, f32 = torch.float64, torch.float32
    ours = NavierStokes2D(n, L, NU, forcing=fno_forcing(n, L), dtype=f64, device=device)
    w = initial_state(fields, n, f64, device)
    w = ours_run(ours, w, warm / round(warm / 0.01), round(warm / 0.01)) if warm > 0 else w
    t0 = time.perf_counter()
    ref = Peer(n, f64, device).run(w, horizon / ref_steps, ref_steps)
    t_ref = time.perf_counter() - t0
    agree = rel_l2(ours_run(ours, w, horizon / ref_steps, ref_steps), ref)
    u, v = ours.velocity(torch.fft.irfft2(w, s=(n, n)))
    log(f"  {n}²: reference ({ref_steps} float64 torch-cfd steps) {t_ref:.1f} s; ours (float64) vs it at the "
        f"same dt {agree:.2e}; max|u| {torch.sqrt(u ** 2 + v ** 2).max().item():.3f}")
    ours, peer = NavierStokes2D(n, L, NU, forcing=fno_forcing(n, L), dtype=f32, device=device), Peer(n, f32, device)
    w = w.to(torch.complex64)
    dts, e_ours, e_peer = [], [], []
    for k in counts:
        dt = horizon / k
        dts.append(dt)
        e_ours.append(rel_l2(ours_run(ours, w, dt, k).to(ref.dtype), ref))
        e_peer.append(rel_l2(peer.run(w, dt, k).to(ref.dtype), ref))
        log(f"    dt {dt:.4g}: ours {e_ours[-1]:.2e}  torch-cfd {e_peer[-1]:.2e}")
    return {"dtype": "float32 runs, float64 reference", "fields": fields, "horizon": horizon,
            "warm_start_time": warm, "reference": f"torch-cfd in float64 at dt = horizon/{ref_steps}",
            "ours_float64_vs_reference_at_ref_dt": agree, "dt": dts, "err_ours": e_ours, "err_peer": e_peer}


class Timer:
    def __init__(self, device):
        self.device = device

    def __call__(self, fn) -> float:
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0


def speed(batch: int, n: int, device, steps: int, repeats: int) -> dict:
    """Median seconds per step, float32, ours (stepper; CUDA graph on GPU) and torch-cfd, interleaved."""
    f32 = torch.float32
    ours = NavierStokes2D(n, L, NU, forcing=fno_forcing(n, L), dtype=f32, device=device)
    peer = Peer(n, f32, device)
    w = initial_state(batch, n, f32, device, seed=1)
    dt = 1e-3  # the cost of a step does not depend on dt
    _, advance = ours.stepper(w, dt, steps)  # CUDA graph on GPU
    timer, t_ours, t_peer = Timer(device), [], []
    with torch.no_grad():
        advance()  # warm-up: FFT plans, buffers, allocator
        peer.run(w, dt, steps)
        for _ in range(repeats):
            t_ours.append(timer(advance) / steps)
            t_peer.append(timer(lambda: peer.run(w, dt, steps)) / steps)
    return {"s_per_step_ours": statistics.median(t_ours), "s_per_step_peer": statistics.median(t_peer),
            "s_per_step_ours_all": t_ours, "s_per_step_peer_all": t_peer}


def copy_bandwidth(device, mib: int) -> float:
    """Bytes read + written per second by a large tensor copy (a simple memory-bandwidth probe)."""
    x = torch.empty(mib << 18, dtype=torch.float32, device=device).fill_(1.0)
    y = torch.empty_like(x)
    timer = Timer(device)
    y.copy_(x)
    t = statistics.median(timer(lambda: y.copy_(x)) for _ in range(5))
    return 2 * x.numel() * 4 / t


def bytes_per_step(batch: int, n: int, itemsize: int = 4) -> float:
    """Bytes ours moves per step as implemented (see ns2d_solver.md): 3 stages of the passes in
    STAGE_PASSES over the complex state of batch x n x (n/2+1) x 2 x itemsize bytes."""
    m = n // 2 + 1
    kappa = ((n - 1) // 3 + 1) / m
    state = batch * n * m * 2 * itemsize
    return state * (3 * (19 + 28 * kappa) + 2 * 3 * kappa)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... or auto")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: one small case, few dt (workload ns2d_solver_quick)")
    p.add_argument("--tol", type=float, default=1e-4,
                   help="relative L2 error at the horizon that defines matched accuracy (float32 runs)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads, both solvers (default: torch's)")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--results", default=None, help="directory for the JSON (default experiments/bench/results)")
    args = p.parse_args()
    _import_peer()
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = device.type == "cuda"
    # freed large temporaries are reused instead of page-faulted anew: without this torch-cfd's
    # 8 x 256² step took 41 to 89 ms from one process to the next on the dev CPU (33 ms with it)
    malloc_tuned = keep_freed_memory() if not gpu else None
    from importlib.metadata import version

    if args.quick:
        horizon, warm, ref_steps, counts = 1.0, 1.0, 200, [2, 4, 8, 16]
        cases, acc_fields, repeats = [(8, 64, 5)], 1, args.repeats or 3
    else:
        horizon, warm, ref_steps = 10.0, 5.0, 4000
        counts = [20, 24, 32, 40, 50, 64, 80, 100, 128, 160, 200, 256, 320, 400]  # dt = 0.5 ... 0.025
        cases = [(64, 256, 50), (8, 1024, 20)] if gpu else [(64, 64, 20), (8, 256, 10)]
        acc_fields, repeats = 1, args.repeats or (15 if gpu else 7)
    info = describe(device)
    log = lambda s: print(s, flush=True)
    log(f"ns2d_solver: {info['device_name']}, torch {torch.__version__}, torch-cfd {version('torch-cfd')}, "
        f"{info['threads']} CPU threads; tolerance {args.tol:g} at horizon {horizon:g}")
    bw = copy_bandwidth(device, 1024 if gpu else 256)
    bw_card = next((v for k, v in {"H100": 3.35e12, "H200": 4.8e12}.items() if k in info["device_name"]), None)

    rows, accuracy_by_n = [], {}
    for batch, n, steps in cases:
        if n not in accuracy_by_n:
            log(f"accuracy, float32 runs, {acc_fields} field(s):")
            accuracy_by_n[n] = accuracy_study(n, device, horizon, warm, acc_fields, ref_steps, counts, log)
        acc = accuracy_by_n[n]
        sp = speed(batch, n, device, steps, repeats)
        by_tol = {}
        for tol in sorted(set(TOLERANCES) | {args.tol}, reverse=True):
            d_o, d_p = largest_ok_dt(acc["dt"], acc["err_ours"], tol), largest_ok_dt(acc["dt"], acc["err_peer"], tol)
            by_tol[f"{tol:g}"] = {"dt_ours": d_o, "dt_peer": d_p,
                                  "ratio": None if not (d_o and d_p) else
                                  (d_o / sp["s_per_step_ours"]) / (d_p / sp["s_per_step_peer"])}
        dt_o, dt_p = by_tol[f"{args.tol:g}"]["dt_ours"], by_tol[f"{args.tol:g}"]["dt_peer"]
        if not (dt_o and dt_p):
            raise SystemExit(f"no listed dt meets tolerance {args.tol:g} at {n}² (ours {dt_o}, torch-cfd {dt_p})")
        moved = bytes_per_step(batch, n)
        row = {
            "batch": batch, "n": n, "dt_ours": dt_o, "dt_peer": dt_p,
            "ms_per_step_ours": 1e3 * sp["s_per_step_ours"], "ms_per_step_peer": 1e3 * sp["s_per_step_peer"],
            "field_steps_per_s_ours": batch / sp["s_per_step_ours"],
            "field_steps_per_s_peer": batch / sp["s_per_step_peer"],
            "step_ratio": sp["s_per_step_peer"] / sp["s_per_step_ours"],
            "sim_time_per_s_ours": batch * dt_o / sp["s_per_step_ours"],
            "sim_time_per_s_peer": batch * dt_p / sp["s_per_step_peer"],
            "ratio": (batch * dt_o / sp["s_per_step_ours"]) / (batch * dt_p / sp["s_per_step_peer"]),
            "ratio_by_tolerance": by_tol,
            "bytes_per_step_ours": moved,
            "floor_ms_at_copy_bandwidth": 1e3 * moved / bw,
            "measured_over_copy_floor": sp["s_per_step_ours"] / (moved / bw),
            **({"floor_ms_at_nominal_bandwidth": 1e3 * moved / bw_card,
                "measured_over_nominal_floor": sp["s_per_step_ours"] / (moved / bw_card)} if bw_card else {}),
            "timings_s_per_step": {"ours": sp["s_per_step_ours_all"], "peer": sp["s_per_step_peer_all"]},
        }
        rows.append(row)
        log(f"{batch} x {n}²: {row['ms_per_step_ours']:.2f} vs {row['ms_per_step_peer']:.2f} ms/step "
            f"(x{row['step_ratio']:.2f}); dt {dt_o:g} vs {dt_p:g}; simulated time/s {row['sim_time_per_s_ours']:.3g} "
            f"vs {row['sim_time_per_s_peer']:.3g}: ratio {row['ratio']:.2f}")
    head = min(rows, key=lambda r: r["ratio"])
    write_result(
        "ns2d_solver_quick" if args.quick else "ns2d_solver", device,
        "fields x simulated time per wall second at matched accuracy", head["sim_time_per_s_ours"],
        head["sim_time_per_s_peer"], results=args.results,
        headline_case=f"{head['batch']} x {head['n']}² (the case with the smallest ratio)",
        peer_name=f"torch-cfd {version('torch-cfd')} NavierStokes2DSpectral + RK4CrankNicolsonStepper",
        timing=f"float32; median of {repeats} interleaved repeats of several steps after a warm-up call; "
               + ("CUDA events; ours replays a CUDA graph" if gpu else "time.perf_counter"),
        matched_accuracy={"tolerance": args.tol, "metric": "relative L2 of the state at the horizon, float32 "
                          "runs against a float64 reference", "horizon": horizon,
                          "rule": "largest listed dt at which it and every smaller listed dt meet the tolerance"},
        pde={"L": L, "nu": NU, "forcing": "0.1 (sin 2pi(x+y) + cos 2pi(x+y))", "drag": 0, "dealias": "2/3",
             "initial": f"GRF alpha 2.5 tau 7 restricted to the 2/3 band, run to t = {warm:g} (accuracy)"},
        glibc_malloc_thresholds_raised=malloc_tuned, copy_bandwidth_GBps=bw / 1e9, nominal_bandwidth_GBps=bw_card and bw_card / 1e9,
        bytes_model=f"3 stages x ({STAGE_PASSES}) x B*n*(n/2+1)*8 bytes (float32)",
        cases=rows, accuracy={str(n): {k: [e if math.isfinite(e) else None for e in v] if k.startswith("err") else v
                                       for k, v in a.items()} for n, a in accuracy_by_n.items()})


if __name__ == "__main__":
    main()
