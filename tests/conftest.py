"""Shared fixtures: a per-session data root and config composition without the command line."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def pytest_configure(config):
    """Under pytest-xdist (``-n N``) the workers share the cores: each takes its share of threads,
    as do the subprocesses tests start (OMP_NUM_THREADS), so that N workers do not run N × cores
    threads that stall one another."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        import torch

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        share = max(1, cores // int(workers))
        torch.set_num_threads(share)
        os.environ["OMP_NUM_THREADS"] = str(share)


@pytest.fixture
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a shared 2-core machine the threads'
    barriers stall for seconds (seen 20-fold slowdowns): run such tests on one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """Generated test data sets live here for the whole session (tiny presets: seconds)."""
    root = tmp_path_factory.mktemp("datasets")
    os.environ["NEUROPDE_DATASETS"] = str(root)
    return root


def compose(config: str = "train", overrides: list[str] | None = None):
    from neuropde.run import compose_config

    return compose_config(config, overrides)


def run_script(script: str, *args: str, cwd: Path, env: dict | None = None, timeout: int = 300):
    """Run one of the repository's scripts as a user would; returns the CompletedProcess."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def trained_fno(data_root, tmp_path_factory):
    """One tiny FNO run shared by the checkpoint / predict tests: (run_dir, metrics)."""
    from neuropde.run import train

    out = tmp_path_factory.mktemp("fno_run")
    cfg = compose("train", ["experiment=fno_tiny", f"run_dir={out}"])
    return out, train(cfg)


def epoch_train_losses(run_dir: Path) -> list[float]:
    """Mean training loss per epoch from a run's CSV log (``logs/metrics.csv``).

    The residual MSE where the task logs one (SDGD's ``train/loss`` is a gradient surrogate whose
    value means nothing), else ``train/loss``. Tests use it to check that a run learned something:
    the last epoch's mean below the first's (one step's loss is too noisy to compare).
    """
    import csv
    import statistics

    with open(Path(run_dir) / "logs" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    key = "train/residual_mse" if any(r.get("train/residual_mse") for r in rows) else "train/loss"
    by_epoch: dict[int, list[float]] = {}
    for r in rows:
        if r.get(key):
            by_epoch.setdefault(int(r["epoch"]), []).append(float(r[key]))
    return [statistics.fmean(v) for _, v in sorted(by_epoch.items())]
