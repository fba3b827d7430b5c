"""``train.py resume=<last.ckpt>`` as users type it: the checkpoint alone continues its run in its
own run dir, steering overrides are taken, and an override that changes the run is refused before
any data is made (issue 29)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from neuropde.errors import UserError
from tests.conftest import ROOT, compose

RUN = ["experiment=fno_tiny", "trainer.max_epochs=4", "seed=7"]


def start(args: list[str], cwd: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_killed_run_resumes_from_its_checkpoint_alone(data_root, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    full = subprocess.run([sys.executable, str(ROOT / "train.py"), *RUN, f"run_dir={tmp_path / 'full'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert full.returncode == 0, full.stderr[-2000:]
    cut = tmp_path / "cut"
    proc = start([*RUN, f"run_dir={cut}"], tmp_path, env)
    last = cut / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert last.exists(), "the run ended or hung before its first checkpoint"
    proc.send_signal(signal.SIGKILL)  # no chance to clean up: as a preempted job
    proc.wait()
    assert not (cut / "metrics.json").exists()
    # the checkpoint alone, from another directory: the run's config and run dir come from it
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    resumed = subprocess.run([sys.executable, str(ROOT / "train.py"), f"resume={last}"], cwd=elsewhere, env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    a = json.loads((tmp_path / "full" / "metrics.json").read_text())
    b = json.loads((cut / "metrics.json").read_text())
    assert b["epochs"] == a["epochs"] == 4
    assert b["test/rel_l2"] == pytest.approx(a["test/rel_l2"], rel=0.01)


def test_resume_steering_overrides_apply_and_others_are_refused(data_root, tmp_path, monkeypatch):
    from neuropde import run as run_module
    from neuropde.run import train

    out = tmp_path / "run"
    train(compose("train", ["experiment=fno_tiny", "trainer.max_epochs=1", "scheduler=step", f"run_dir={out}"]))
    last = out / "checkpoints" / "last.ckpt"
    # steering: more epochs, in the run's own dir, under the stored config (the experiment not repeated)
    cfg = run_module.resume_config(compose("train", [f"resume={last}", "trainer.max_epochs=2"]))
    assert cfg.run_dir == str(out) and cfg.trainer.max_epochs == 2 and cfg.model.family == "fno"
    assert cfg.data.name == "ns2d_tiny"
    # repeating the original overrides is the same run
    assert run_module.resume_config(compose("train", ["experiment=fno_tiny", f"resume={last}"])).model.net.width == 8
    # a schedule planned over the run's length (the default one-cycle) has nothing past its end
    cycled = tmp_path / "cycled"
    train(compose("train", ["experiment=fno_tiny", "trainer.max_epochs=1", f"run_dir={cycled}"]))
    with pytest.raises(UserError, match="one_cycle.*init_from"):
        run_module.resume_config(compose("train", [f"resume={cycled}", "trainer.max_epochs=2"]))

    def no_data(*args, **kwargs):
        raise AssertionError("data were touched before the refusal")

    monkeypatch.setattr(run_module, "build_datamodule", no_data)
    monkeypatch.setattr(run_module, "cpu_hint", no_data)
    start_time = time.perf_counter()
    with pytest.raises(UserError, match="model.family: fno in the checkpoint, lsm now.*init_from") as err:
        train(compose("train", [f"resume={last}", "model=lsm"]))
    assert "\n" not in str(err.value) and time.perf_counter() - start_time < 30
    with pytest.raises(UserError, match="optimizer.lr"):
        train(compose("train", ["experiment=fno_tiny", f"resume={last}", "optimizer.lr=0.5"]))


def test_resume_model_swap_refused_from_the_command_line(tmp_path, data_root):
    """The acceptance command itself: refused in seconds, differing keys named, nothing generated."""
    from neuropde.run import train

    out = tmp_path / "run"
    train(compose("train", ["experiment=fno_tiny", "trainer.max_epochs=1", f"run_dir={out}"]))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "NEUROPDE_DATASETS": str(tmp_path / "fresh_datasets")}
    start_time = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), f"resume={out / 'checkpoints' / 'last.ckpt'}",
                           "model=sfno"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert time.perf_counter() - start_time < 30
    assert done.returncode == 2 and "model.family" in done.stderr + done.stdout
    assert not (tmp_path / "fresh_datasets").exists()
