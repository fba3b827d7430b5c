"""The logger and callbacks config groups: what each logger receives, refusals, optional packages."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from neuropde.errors import UserError
from neuropde.run import train
from tests.conftest import compose, run_script

TINY = ["experiment=fno_tiny", "trainer.max_epochs=2", "plot_every_n_epochs=1"]
LOGGERS = ["csv", "mlflow", "none", "tensorboard", "wandb"]


def test_tensorboard_gets_the_metrics_and_the_validation_plots(data_root, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    metrics = train(compose("train", TINY + ["logger=tensorboard", f"run_dir={run}"]))
    scalars, images = {}, {}
    for file in sorted((run / "tensorboard").glob("events.out.tfevents.*")):  # fit and test write one each
        events = EventAccumulator(str(file), size_guidance={"images": 0, "scalars": 0})
        events.Reload()
        scalars.update({t: [e.value for e in events.Scalars(t)] for t in events.Tags()["scalars"]})
        images.update({t: events.Images(t) for t in events.Tags()["images"]})
    assert len(scalars["val/rel_l2"]) == 2  # one per validation
    assert scalars["val/rel_l2"][-1] == pytest.approx(metrics["val/rel_l2"], rel=1e-6)
    assert "train/loss" in scalars and "test/rel_l2" in scalars
    assert [e.step for e in images["val/plot"]] == sorted({e.step for e in images["val/plot"]})
    assert len(images["val/plot"]) == 2 and all(e.width > 100 and e.height > 100 for e in images["val/plot"])
    assert len(list((run / "plots").glob("val_epoch*.png"))) == 2  # the PNG files stay
    assert not (run / "logs").exists()  # the chosen logger replaces the CSV one


def test_wandb_offline_runs_get_the_metrics_and_the_plots(data_root, tmp_path, monkeypatch):
    """Two runs in one process (a sweep under Hydra's basic launcher) get a W&B run each."""
    import wandb  # the dev extra installs it: a missing package fails here, it is not skipped
    for var, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": tmp_path / "wandb",
                       "WANDB_CONFIG_DIR": tmp_path / "wandb_config", "WANDB_CACHE_DIR": tmp_path / "wandb_cache",
                       "WANDB_DATA_DIR": tmp_path / "wandb_data"}.items():
        monkeypatch.setenv(var, str(value))
    runs = [tmp_path / "a", tmp_path / "b"]
    try:
        metrics = [train(compose("train", TINY + ["trainer.max_epochs=1", "logger=wandb", "logger.offline=true",
                                                  f"run_dir={run}"])) for run in runs]
    finally:
        wandb.finish()  # flushes the second run's file
    for run, m in zip(runs, metrics):
        [offline] = (run / "wandb").glob("offline-run-*")  # under the run dir, one run each
        [records] = offline.glob("run-*.wandb")
        data = records.read_bytes()  # protobuf records: keys and JSON values appear verbatim
        assert b"val/rel_l2" in data and b"train/loss" in data and b"test/rel_l2" in data
        assert repr(m["val/rel_l2"]).encode() in data
        assert len(list(offline.glob("files/media/images/val/plot_*.png"))) == 1


def test_an_unknown_logger_is_refused_with_the_options(tmp_path):
    with pytest.raises(UserError, match="^logger=nonsense is not an option; choose one of csv, mlflow, none, "
                       "tensorboard, wandb$"):
        compose("train", ["logger=nonsense"])

    res = run_script("train.py", "logger=nonsense", cwd=tmp_path)  # as a user sees it
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "Traceback" not in out
    assert "logger/nonsense" in out and all(f"\t{name}\n" in out for name in LOGGERS)
    assert not list(tmp_path.rglob("config.yaml"))  # refused before a run dir was made


def test_a_config_from_before_the_groups_still_names_its_logger(tmp_path):
    """Checkpoints and run dirs written before this change say ``logger: csv`` (a string)."""
    from lightning.pytorch.loggers import CSVLogger

    from neuropde.callbacks.build import build_logger_and_callbacks

    cfg = compose("train", ["experiment=fno_tiny"])
    old = OmegaConf.create({**OmegaConf.to_container(cfg, resolve=True), "logger": "csv"})
    del old["callbacks"]
    logger, callbacks = build_logger_and_callbacks(old, tmp_path)
    assert isinstance(logger, CSVLogger) and Path(logger.log_dir) == tmp_path / "logs"
    assert [type(c).__name__ for c in callbacks] == ["ModelCheckpoint", "ValidationPlots", "EpochTimer"]
    old.logger = "none"
    assert build_logger_and_callbacks(old, tmp_path)[0] is False
    old.logger = "nonsense"
    with pytest.raises(UserError, match="logger=nonsense is not an option; choose one of csv, mlflow, none"):
        build_logger_and_callbacks(old, tmp_path)


@pytest.mark.parametrize("override, modules, pip", [
    ("logger=tensorboard", ["tensorboard", "tensorboardX"], "tensorboard"),
    ("logger=wandb", ["wandb"], "wandb"),
    ("logger=mlflow", ["mlflow"], "mlflow"),
    ("callbacks=rich_progress_bar", ["rich"], "rich"),
])
def test_a_missing_package_names_the_pip_install_before_any_work(override, modules, pip, tmp_path, monkeypatch):
    for module in modules:  # None in sys.modules makes `import module` fail as if not installed
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setenv("NEUROPDE_DATASETS", str(tmp_path / "datasets"))
    with pytest.raises(UserError, match=f"needs the {pip} package, which is not installed: pip install {pip}$"):
        train(compose("train", ["experiment=fno_tiny", override, f"run_dir={tmp_path / 'run'}"]))
    assert not (tmp_path / "datasets").exists() and not (tmp_path / "run" / "config.yaml").exists()


def test_early_stopping_watches_the_monitor(data_root, tmp_path):
    """The persistence baseline does not depend on the network, so it never improves: patience 1
    ends a 6-epoch run after its second epoch."""
    run = tmp_path / "run"
    cfg = compose("train", TINY + ["trainer.max_epochs=6", "callbacks=early_stopping", "logger=none",
                                   "callbacks.early_stopping.patience=1", "monitor=val/rel_l2_persistence",
                                   "plot_every_n_epochs=100", f"run_dir={run}"])
    assert cfg.callbacks.early_stopping.monitor == cfg.callbacks.checkpoint.monitor == "val/rel_l2_persistence"
    metrics = train(cfg)
    assert metrics["epochs"] == 2
    assert (run / "checkpoints" / "best.ckpt").exists()
