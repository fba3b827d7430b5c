"""Shared pieces of the speed benchmarks: device choice, timing, and the result file.

Every workload script times ours and the peer in one process, excludes warm-up, and reports the
median over repeats: CUDA events around each repeat on a GPU, ``perf_counter`` on a CPU. The result
file ``results/<workload>_<device>.json`` holds ``ours``, ``peer`` (the workload's unit, higher is
better), ``ratio = ours / peer`` and the details.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def pick_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no GPU; use --device cpu")
    return device


def describe(device: torch.device) -> dict:
    """What ran the benchmark: card or CPU, threads, torch version."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        try:  # the CPU's model name on Linux
            lines = Path("/proc/cpuinfo").read_text().splitlines()
            name = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
    return {"device": device.type, "device_name": name, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "cpu_count": os.cpu_count()}


def median_ms(fn: Callable[[], object], device: torch.device, calls: int, repeats: int,
              warmup: int = 3) -> float:
    """Median milliseconds per call of ``fn``, over ``repeats`` timings of ``calls`` calls each.

    ``warmup`` untimed calls first (allocator, FFT plans, autotuning, compilation).
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(calls):
                fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / calls)
        else:
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            times.append(1e3 * (time.perf_counter() - t0) / calls)
    return statistics.median(times)


def interleaved_ms(fns: dict[str, Callable[[], object]], device: torch.device, calls: int,
                   repeats: int) -> dict[str, float]:
    """Median milliseconds per call of each function, timed in interleaved rounds.

    Each round times ``calls`` calls of every function, starting from a different one each round,
    so that drift of the machine (other jobs, clocks, memory bandwidth) hits all of them alike;
    warm them up before. Timing as :func:`median_ms`.
    """
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            times[name].append(median_ms(fns[name], device, calls, repeats=1, warmup=0))
    return {name: statistics.median(v) for name, v in times.items()}


# aten ops that only make views or read a scalar: no kernel of their own on a GPU
_NO_KERNEL = ("view", "_unsafe_view", "permute", "unsqueeze", "squeeze", "expand", "slice", "select", "t.",
              "transpose", "detach", "as_strided", "alias", "view_as_real", "view_as_complex", "unbind",
              "split", "_reshape_alias", "unflatten", "lift_fresh", "_local_scalar_dense")


def count_kernel_ops(fn: Callable[[], object]) -> int:
    """Aten ops that launch work (views and scalar reads excluded) during one call of ``fn``:
    in the launch-bound regime of a small GPU workload, each costs a kernel launch in eager mode."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not str(func).removeprefix("aten.").startswith(_NO_KERNEL):
                Count.n += 1
            return func(*args, **(kwargs or {}))

    with Count():
        fn()
    return Count.n


def write_result(workload: str, device: torch.device, unit: str, ours: float, peer: float,
                 results: str | Path | None = None, **details) -> dict:
    """Write ``<results>/<workload>_<device>.json`` atomically (default ``results/`` here) and
    return its content."""
    result = {"workload": workload, "unit": unit, "ours": round(ours, 4), "peer": round(peer, 4),
              "ratio": round(ours / peer, 4), **describe(device), **details}
    directory = Path(results) if results else RESULTS
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{workload}_{device.type}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)
    print(json.dumps({k: result[k] for k in ("workload", "unit", "ours", "peer", "ratio")}))
    return result
