"""Does a data set larger than memory train, and at what cost? (issue 27)

Writes one HDF5 file of ``--gb`` gigabytes of (N, T, 128, 128) float32 trajectories, trains the
same FNO on it for ``--steps`` steps twice through ``train.py`` (``data=file``):

- lazily (``data.in_memory=false``): each window is read from the file when the loader asks;
- in memory (``data.in_memory=true``): every split read into RAM first.

and reports each run's peak resident memory (the child's ``ru_maxrss``) and training samples/s.
The file is deleted afterwards (``--keep`` keeps it).

    python experiments/user_data/lazy_read.py              # 8 GB, 300 steps per run (22 min here, one core busy elsewhere)
    python experiments/user_data/lazy_read.py --smoke      # 0.05 GB, 5 steps, into a temporary folder
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.append(str(HERE.parent / "bench"))  # experiments/bench/common.py: what ran it
from common import describe  # noqa: E402
SIZE, FRAMES = 128, 40          # grid and frames per trajectory: 2.6 MB a trajectory


def write_file(path: Path, gigabytes: float) -> tuple[int, float]:
    """Write ``gigabytes`` of smooth random trajectories, (N, FRAMES, SIZE, SIZE); return (N, seconds)."""
    per_sample = FRAMES * SIZE * SIZE * 4
    n = max(20, int(gigabytes * 1e9 / per_sample))
    x = np.linspace(0, 2 * np.pi, SIZE, endpoint=False, dtype=np.float32)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    tmp = path.with_suffix(".tmp")
    with h5py.File(tmp, "w") as f:
        dset = f.create_dataset("u", shape=(n, FRAMES, SIZE, SIZE), dtype="float32",
                                chunks=(1, 1, SIZE, SIZE))  # a frame per chunk: a window reads only its frames
        block = 64
        for s in range(0, n, block):
            m = min(block, n - s)
            kx, ky = rng.integers(1, 4, (2, m, 1, 1, 1))
            phase = rng.uniform(0, 2 * np.pi, (m, 1, 1, 1)).astype(np.float32)
            t = 0.2 * np.arange(FRAMES, dtype=np.float32)[None, :, None, None]
            dset[s:s + m] = (np.sin(kx * x[:, None] + t + phase) * np.cos(ky * x[None, :] - t)).astype(np.float32)
    os.replace(tmp, path)
    return n, time.perf_counter() - start


def drop_page_cache() -> bool:
    """Empty the kernel's page cache (root only), so that a run reads the file from the disk, not
    from memory the previous run left filled; False when not permitted."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def train_once(path: Path, out: Path, in_memory: bool, steps: int) -> dict:
    """One training run in a child process (started with an empty page cache where permitted);
    its metrics, peak RSS (MB) and wall time."""
    cold = drop_page_cache()
    overrides = ["model=fno", "data=file", f"data.path={path}", "data.keys=[u]", f"data.in_memory={str(in_memory).lower()}",
                 "data.window.t_in=10", "data.window.t_out=10", "data.window.stride=10", "data.window.eval_stride=20",
                 "data.loader.batch_size=8", "model.net.width=20", "model.net.modes=[12,12]",
                 "trainer.max_epochs=1", f"+trainer.limit_train_batches={steps}", "+trainer.limit_val_batches=2",
                 "+trainer.limit_test_batches=2", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
                 f"run_dir={out}"]
    probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
             "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", probe, sys.executable, str(ROOT / "train.py"), *overrides],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"training failed ({'in memory' if in_memory else 'lazy'}):\n{done.stderr[-3000:]}")
    rss_kb = int(next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("MAXRSS_KB")))
    metrics = json.loads((out / "metrics.json").read_text())
    return {"page_cache_dropped": cold, "peak_rss_mb": rss_kb / 1024, "train_seconds": metrics["train_seconds"], "wall_seconds": wall,
            "samples_per_s": steps * 8 / metrics["train_seconds"], "test/rel_l2": metrics["test/rel_l2"]}


def read_rate(path: Path, batches: int) -> dict:
    """Windows per second the training loader delivers, without a model: from the file (lazy, an
    empty page cache first) and from the same windows of trajectories held in memory."""
    sys.path.insert(0, str(ROOT))
    from torch.utils.data import DataLoader

    from neuropde.data.datamodule import EpochShuffle
    from neuropde.data.files import FileDataModule, InMemory, SourceWindows
    from neuropde.run import compose_config, describe_data, to_dict

    cfg = compose_config("train", ["model=fno", "data=file", f"data.path={path}", "data.keys=[u]",
                                   "data.window.t_in=10", "data.window.t_out=10", "data.window.stride=10"])
    describe_data(cfg)
    source = FileDataModule(to_dict(cfg.data), path.parent).open()["train"]

    class Head:  # the first trajectories of the split, for the in-memory copy
        def __init__(self, src, n):
            self.src, self.n, self.info = src, n, src.info

        def __len__(self):
            return self.n

        def frames(self, i, start, stop):
            return self.src.frames(i, start, stop)

        def constants(self, i):
            return None

        def where(self, i):
            return self.src.where(i)

        def close(self):
            pass

    def rate(src, workers: int = 0, seed: int = 0) -> float:
        windows = SourceWindows(src, 10, 10, 10, channel_axis=False)
        loader = DataLoader(windows, batch_size=8, sampler=EpochShuffle(len(windows), seed), num_workers=workers)
        start, n = time.perf_counter(), 0
        for i, (x, _) in enumerate(loader):
            n += len(x)
            if i + 1 == batches:
                break
        return n / (time.perf_counter() - start)

    drop_page_cache()
    lazy = rate(source)
    drop_page_cache()
    lazy_workers = rate(source, workers=2, seed=1)  # other windows: none of them cached by the first pass
    held = InMemory(Head(source, min(len(source), 200)))
    return {"batches": batches, "lazy_windows_per_s": lazy, "lazy_windows_per_s_2_workers": lazy_workers,
            "in_memory_windows_per_s": rate(held), "in_memory_trajectories": len(held)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=8.0, help="size of the file (GB)")
    parser.add_argument("--steps", type=int, default=300, help="training steps of each run (batch 8)")
    parser.add_argument("--dir", default=None, help="where the file goes (default: a temporary folder)")
    parser.add_argument("--out", default=None, help="folder of the results JSON (default: results/, or a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the file")
    parser.add_argument("--smoke", action="store_true", help="0.05 GB, 5 steps, results into a temporary folder")
    parser.add_argument("--reading-only", action="store_true", help="the loader's rate without training runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.gb, args.steps = 0.05, 5
    args.out = args.out or (tempfile.mkdtemp(prefix="lazy_read_smoke_") if args.smoke else str(HERE / "results"))
    work = Path(args.dir or tempfile.mkdtemp(prefix="lazy_read_"))
    work.mkdir(parents=True, exist_ok=True)
    path = work / "big.h5"
    try:
        n, write_s = write_file(path, args.gb)
        size_gb = path.stat().st_size / 1e9
        print(f"wrote {path}: {n} trajectories, {size_gb:.2f} GB in {write_s:.0f} s", flush=True)
        reading = read_rate(path, 20 if args.smoke else 200)
        print("reading only", json.dumps(reading), flush=True)
        if args.reading_only:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "lazy_read_reading.json").write_text(json.dumps(
                {"file_gb": size_gb, "trajectories": n, "grid": SIZE, "frames": FRAMES, **reading,
                 "machine": describe(torch.device("cpu"))}, indent=2))
            return
        runs = {}
        for name, in_memory in (("lazy", False), ("in_memory", True)):
            runs[name] = train_once(path, work / f"run_{name}", in_memory, args.steps)
            print(name, json.dumps(runs[name]), flush=True)
    finally:
        if not args.keep:
            path.unlink(missing_ok=True)
    result = {"file_gb": size_gb, "trajectories": n, "grid": SIZE, "frames": FRAMES, "steps": args.steps,
              "batch": 8, "runs": runs, "reading_only": reading,
              "samples_per_s_ratio": runs["lazy"]["samples_per_s"] / runs["in_memory"]["samples_per_s"],
              "machine": describe(torch.device("cpu"))}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "lazy_read_smoke.json" if args.smoke else "lazy_read.json"
    (out / name).write_text(json.dumps(result, indent=2))
    print(f"lazy peak RSS {runs['lazy']['peak_rss_mb']:.0f} MB (in memory {runs['in_memory']['peak_rss_mb']:.0f} MB); "
          f"samples/s lazy / in memory = {result['samples_per_s_ratio']:.2f}; results in {out / name}")


if __name__ == "__main__":
    main()
