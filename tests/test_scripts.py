"""The command line as users type it: unknown options, sweeps, DDP on 2 CPU processes, predict."""
import json

import pytest

from tests.conftest import CONF, epoch_train_losses, run_script


def test_unknown_option_lists_the_choices(tmp_path):
    res = run_script("train.py", "model=nope", cwd=tmp_path)
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "model/nope" in out and "sfno" in out and "fno" in out


def test_unknown_key_is_rejected(tmp_path):
    res = run_script("train.py", "model.net.widht=3", cwd=tmp_path)
    assert res.returncode != 0 and "widht" in res.stdout + res.stderr


def test_missing_checkpoint_is_one_clear_line(tmp_path):
    res = run_script("predict.py", f"ckpt={tmp_path / 'missing.ckpt'}", cwd=tmp_path)
    assert res.returncode == 2
    assert "checkpoint not found" in res.stdout + res.stderr and "Traceback" not in res.stderr
    res = run_script("predict.py", cwd=tmp_path)  # no ckpt= at all
    assert res.returncode == 2 and "needs a checkpoint: ckpt=" in res.stderr and "Traceback" not in res.stderr


def test_user_errors_go_to_stderr_and_progress_to_stdout(tmp_path):
    res = run_script("train.py", "experiment=fno_tiny", "trainer.max_epochs=abc", cwd=tmp_path)
    assert res.returncode == 2
    assert "trainer.max_epochs must be an integer" in res.stderr and "max_epochs" not in res.stdout
    assert "Traceback" not in res.stderr
    res = run_script("generate.py", "data=ns2d_tiny", "splits=[val]", cwd=tmp_path,
                     env={"NEUROPDE_DATASETS": str(tmp_path / "datasets")})
    assert res.returncode == 0, res.stderr[-2000:]
    assert "generating ns2d_tiny/val" in res.stdout and "generating" not in res.stderr


@pytest.mark.parametrize("script, mine, not_mine", [
    ("train.py", ["model", "optimizer", "trainer", "experiment", "sfno_quick", "accumulate_grad_batches"],
     ["refine", "assimilate", "$CONFIG"]),
    ("predict.py", ["ckpt=", "refine=true", "assimilate=true", "data.resolution=128"], ["optimizer", "experiment"]),
    ("generate.py", ["data=", "ns2d_small", "NEUROPDE_DATASETS"], ["model", "optimizer", "refine"]),
])
def test_help_prints_the_usage_and_the_scripts_own_groups(script, mine, not_mine, tmp_path):
    res = run_script(script, "--help", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"Usage: python {script}" in res.stdout
    assert all(word in res.stdout for word in mine), res.stdout
    assert not any(word in res.stdout for word in not_mine), res.stdout


def test_a_user_error_is_one_line_and_exit_status_2(caplog):
    from neuropde.errors import UserError, main_guard

    @main_guard
    def main(cfg):
        raise UserError(f"set x={cfg}")

    with pytest.raises(SystemExit) as exit_:
        main(1)
    assert exit_.value.code == 2 and caplog.messages == ["set x=1"]


def test_a_bad_job_of_a_generate_sweep_does_not_end_it(tmp_path):
    res = run_script("generate.py", "-m", "data=ns2d_tiny", "data.resolution=0,1", "hydra.sweep.dir=sweep",
                     cwd=tmp_path, env={"NEUROPDE_DATASETS": str(tmp_path / "datasets")})
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-2000:]
    assert out.count("whole number of at least 2") == 2 and "Traceback" not in out


def test_sweep_runs_each_job_in_a_readable_subdir(data_root, tmp_path):
    res = run_script("train.py", "-m", "experiment=fno_tiny", "seed=0,1", "trainer.max_epochs=1",
                     "hydra.sweep.dir=sweep", cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    subdirs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert subdirs == ["0_experiment=fno_tiny,seed=0,trainer.max_epochs=1",
                       "1_experiment=fno_tiny,seed=1,trainer.max_epochs=1"], subdirs
    m0, m1 = (json.loads((tmp_path / "sweep" / d / "metrics.json").read_text()) for d in subdirs)
    # Lightning's messages reach the console once per job (not also through its own handler)
    out = res.stdout + res.stderr
    assert out.count("GPU available") == 2 and "Tip:" not in out, out[-3000:]
    # the sweep's summary: a row per job, and the two seeds of the one setting averaged
    rows = (tmp_path / "sweep" / "summary.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("job,experiment,seed,trainer.max_epochs,status,")
    table = (tmp_path / "sweep" / "summary.md").read_text()
    mean = (m0["test/rel_l2"] + m1["test/rel_l2"]) / 2
    assert "| fno_tiny | 1 | 2 | 0 | " in table and f"{mean:.4g} ± " in table, table
    assert m0["test/rel_l2"] != m1["test/rel_l2"]  # different seeds, different models


def test_a_diverging_job_does_not_end_the_sweep(data_root, tmp_path):
    res = run_script("train.py", "-m", "experiment=fno_tiny", "optimizer.lr=1e6,1e-3", "trainer.max_epochs=1",
                     "hydra.sweep.dir=sweep", cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout + res.stderr
    assert "training diverged" in out and "1 of 2 jobs left no metrics" in out
    table = (tmp_path / "sweep" / "summary.md").read_text()
    assert "| fno_tiny | 1000000.0 | 1 | 0 | 1 | — |" in table and "| fno_tiny | 0.001 | 1 | 1 | 0 | " in table


def test_ddp_on_two_cpu_processes(data_root, tmp_path):
    res = run_script("train.py", "experiment=fno_tiny", "trainer=ddp", "trainer.accelerator=cpu",
                     "trainer.devices=2", "trainer.max_epochs=4",
                     "hydra.run.dir=ddp_run", cwd=tmp_path, timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    out = res.stdout + res.stderr
    assert "distributed_backend=gloo" in out and "All distributed processes registered" in out
    metrics = json.loads((tmp_path / "ddp_run" / "metrics.json").read_text())
    assert metrics["test/rel_l2"] == metrics["test/rel_l2"]
    losses = epoch_train_losses(tmp_path / "ddp_run")  # rank 0's log: the two processes trained one model
    assert len(losses) == 4 and losses[-1] < losses[0], losses


def test_predict_cli_with_resolution_edit(trained_fno, tmp_path):
    run, _ = trained_fno
    res = run_script("predict.py", f"ckpt={run / 'checkpoints' / 'best.ckpt'}", "data.resolution=48",
                     "hydra.run.dir=pred", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    metrics = json.loads((tmp_path / "pred" / "metrics.json").read_text())
    assert metrics["resolution"] == 48 and metrics["test/rel_l2"] == metrics["test/rel_l2"]


def test_launcher_configs_resolve(tmp_path):
    res = run_script("train.py", "hydra/launcher=local_joblib", "experiment=fno_tiny", "--cfg", "hydra",
                     cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "JoblibLauncher" in res.stdout and "n_jobs: 2" in res.stdout
    slurm = (CONF / "hydra" / "launcher" / "slurm.yaml").read_text()
    assert "submitit_slurm" in slurm and "gpus_per_node: 1" in slurm
