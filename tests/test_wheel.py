"""The package as a user installs it: a wheel built from the sources, installed into a fresh
virtual environment, its console scripts run from an empty directory (no checkout in sight)."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import neuropde
from tests.conftest import ROOT

# ~25 s on 2 cores (a build, a venv, a training run and a prediction): slow, to keep the default suite
# under 10 minutes (run with -m slow; passed on the 2-core Xeon, 2026-12-07)


def _sh(*cmd, cwd, env=None, timeout=300):
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.mark.slow
def test_wheel_installs_and_its_console_scripts_train_and_predict(tmp_path):
    start = time.perf_counter()
    # build from a copy of what the sdist holds, so that the build leaves nothing in the checkout
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("neuropde", "conf"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path / "dist", ".", cwd=src)
    wheel = next((tmp_path / "dist").glob("neuropde-*.whl"))
    assert wheel.name.startswith(f"neuropde-{neuropde.__version__}-")  # pyproject's version is the package's

    # torch, lightning & co. come from this interpreter's site-packages; neuropde only from the wheel
    venv = tmp_path / "venv"
    _sh(sys.executable, "-m", "venv", "--system-site-packages", venv, cwd=tmp_path)
    bin_ = venv / "bin"
    _sh(bin_ / "pip", "install", "--no-deps", "-q", wheel, cwd=tmp_path)

    work = tmp_path / "empty"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(NEUROPDE_DATASETS=str(work / "datasets"), OMP_NUM_THREADS="1")
    where = _sh(bin_ / "python", "-c", "import neuropde; print(neuropde.__file__); print(neuropde.CONF_DIR)",
                cwd=work, env=env).stdout.split()
    assert all(Path(p).is_relative_to(venv) for p in where), where  # the wheel's copy, conf/ inside it

    usage = _sh(bin_ / "neuropde-generate", "--help", cwd=work, env=env).stdout
    assert "Usage: neuropde-generate data=<name>" in usage and "ns2d_small" in usage  # the packaged conf/

    _sh(bin_ / "neuropde-train", "experiment=fno_tiny", "hydra.run.dir=run", cwd=work, env=env)
    assert (work / "run" / "checkpoints" / "best.ckpt").exists() and (work / "run" / "train.log").exists()
    trained = json.loads((work / "run" / "metrics.json").read_text())["test/rel_l2"]

    _sh(bin_ / "neuropde-predict", "ckpt=run", "hydra.run.dir=pred", cwd=work, env=env)
    assert (work / "pred" / "predictions.h5").exists()
    assert json.loads((work / "pred" / "metrics.json").read_text())["test/rel_l2"] == pytest.approx(trained, rel=1e-4)
    print(f"wheel build, install, train and predict: {time.perf_counter() - start:.0f} s")
