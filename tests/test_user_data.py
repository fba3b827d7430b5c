"""Training and predicting on the user's own files (data=file / well / pdebench): operator families
train a few steps on each format, predict on another file of the same layout, and every bad file is
refused in one line before any artefact claims success."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from neuropde.errors import UserError
from tests.conftest import compose

TINY = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
        "+trainer.limit_test_batches=1", "data.loader.batch_size=4",
        "data.window.t_in=2", "data.window.t_out=2", "data.window.eval_stride=4"]
FAMILY = {"fno": ["model.net.modes=[4,4]", "model.net.width=8", "model.net.n_layers=2"],
          "sfno": ["model.net.modes=[4,4,2]", "model.net.width=8", "model.net.n_layers=2", "model.net.t_latent=2"],
          "lsm": ["model.net.width=16", "model.net.n_heads=2", "model.net.patch_size=[4,4]", "model.net.n_scales=2"],
          "mg_tfno": ["model.net.modes=[4,4]", "model.net.width=8", "model.net.n_layers=2", "model.net.levels=0"]}


def trajectories(n: int = 10, t: int = 8, size: int = 16, channels: int = 0, seed: int = 0) -> np.ndarray:
    """Smooth travelling waves, (n, t, size, size) or (n, t, size, size, channels)."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 2 * np.pi, size, endpoint=False)
    X, Y = np.meshgrid(x, x, indexing="ij")
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1, 1))
    time = 0.3 * np.arange(t)[None, :, None, None]
    u = np.sin(X + time + phase) * np.cos(Y - 0.5 * time)
    if channels:
        u = np.stack([(c + 1) * np.roll(u, c, axis=-1) + c for c in range(channels)], axis=-1)
    return u.astype(np.float32)


def run(tmp: Path, family: str, data: list[str], name: str = "run"):
    from neuropde.run import train

    out = tmp / name
    cfg = compose("train", [f"model={family}", *data, *FAMILY[family], *TINY, "trainer.accelerator=cpu",
                            "trainer.enable_progress_bar=false", f"run_dir={out}"])
    return out, train(cfg)


@pytest.mark.parametrize("family", ["fno", "sfno"])
def test_npz_trains_and_predicts_on_another_file(tmp_path, family, one_thread):
    from neuropde.run import predict

    np.savez(tmp_path / "train.npz", u=trajectories())
    np.savez(tmp_path / "other.npz", u=trajectories(n=6, seed=1))
    out, metrics = run(tmp_path, family, ["data=file", f"data.path={tmp_path / 'train.npz'}", "data.keys=[u]"])
    assert np.isfinite(metrics["test/rel_l2"]) and (out / "checkpoints" / "last.ckpt").exists()
    cfg = compose("predict", [f"ckpt={out}", f"data.path={tmp_path / 'other.npz'}",
                              f"run_dir={tmp_path / 'pred'}"])
    result = predict(cfg)
    assert result["samples"] == 6 * 2 and np.isfinite(result["test/rel_l2"])  # every window of the whole file
    with h5py.File(tmp_path / "pred" / "predictions.h5") as f:
        assert f["predictions"].shape[1:] == (2, 16, 16)


def test_several_fields_train_fno_and_sfno_refuses(tmp_path, one_thread):
    from neuropde.run import predict, train

    u = trajectories(channels=3)                                   # (N, T, X, Y, C)
    with h5py.File(tmp_path / "data.h5", "w") as f:
        f["u"] = u
    data = ["data=file", f"data.path={tmp_path / 'data.h5'}", "data.keys=[u]", "data.layout=N T X Y C"]
    out, metrics = run(tmp_path, "fno", data)
    assert np.isfinite(metrics["test/rel_l2"])
    stored = json.loads((out / "metrics.json").read_text())
    assert stored["test/rel_l2"] == metrics["test/rel_l2"]
    result = predict(compose("predict", [f"ckpt={out}", f"run_dir={tmp_path / 'pred'}"]))
    with h5py.File(tmp_path / "pred" / "predictions.h5") as f:
        assert f["predictions"].shape[1:] == (2, 3, 16, 16)         # (T_out, C, X, Y)
    assert np.isfinite(result["test/rel_l2"])
    with pytest.raises(UserError, match="one field per frame.*3"):
        train(compose("train", ["model=sfno", *data, f"run_dir={tmp_path / 'sfno'}"]))
    assert not (tmp_path / "sfno" / "metrics.json").exists()


def test_predict_refuses_a_file_with_other_fields(tmp_path, one_thread):
    from neuropde.run import predict

    np.savez(tmp_path / "one.npz", u=trajectories())
    np.savez(tmp_path / "two.npz", u=trajectories(), v=trajectories(seed=3))
    out, _ = run(tmp_path, "fno", ["data=file", f"data.path={tmp_path / 'one.npz'}", "data.keys=[u]"])
    cfg = compose("predict", [f"ckpt={out}", f"data.path={tmp_path / 'two.npz'}", "data.keys=[u,v]",
                              f"run_dir={tmp_path / 'pred'}"])
    with pytest.raises(UserError, match="trained on other fields"):
        predict(cfg)
    assert not (tmp_path / "pred" / "predictions.h5").exists()


def test_pairs_train_with_padding_for_non_periodic_axes(tmp_path, one_thread):
    a = trajectories(n=12, t=1)[:, 0]
    np.savez(tmp_path / "pairs.npz", a=a, u=np.cumsum(a, axis=-1) / 16)
    data = ["data=file", f"data.path={tmp_path / 'pairs.npz'}", "data.input_key=a", "data.output_key=u",
            "data.layout=N X Y", "data.periodic=false"]
    cfg = compose("train", ["model=fno", *data])
    from neuropde.run import describe_data

    describe_data(cfg)
    assert cfg.data.spec.kind == "pair2d" and cfg.data.window.t_in == 1
    assert list(cfg.model.net.pad_fraction) == [0.1, 0.1]
    cfg = compose("train", ["model=fno", *data, "data.periodic=[true,false]"])
    describe_data(cfg)
    assert list(cfg.model.net.pad_fraction) == [0.0, 0.1]  # only the wall-bounded axis is padded
    _, metrics = run(tmp_path, "fno", [*data])
    assert np.isfinite(metrics["test/rel_l2"]) and "test/rel_l2_persistence" not in metrics


def test_well_dummy_file_trains_fno(tmp_path, one_thread):
    pytest.importorskip("the_well")
    from the_well.utils.dummy_data import write_dummy_data

    for split in ("train", "valid", "test"):
        (tmp_path / "data" / split).mkdir(parents=True)
        write_dummy_data(str(tmp_path / "data" / split / "dummy.hdf5"))
    out, metrics = run(tmp_path, "fno", ["data=well", f"data.path={tmp_path}", "data.window.t_in=1",
                                         "data.window.t_out=1"])
    assert np.isfinite(metrics["test/rel_l2"])
    spec = yaml.safe_load((out / "config.yaml").read_text())["data"]["spec"]
    assert spec["channels"] > 1 and len(spec["channel_names"]) == spec["channels"]


def write(path: Path, u: np.ndarray) -> None:
    """``u`` as the user would save it, by the file's extension."""
    if path.suffix == ".h5":
        with h5py.File(path, "w") as f:
            f["u"] = u
    elif path.suffix == ".npy":
        np.save(path, u)
    elif path.suffix == ".pt":
        import torch

        torch.save({"u": torch.from_numpy(u)}, path)
    elif path.suffix == ".mat":
        from scipy.io import savemat

        savemat(path, {"u": u})
    elif path.suffix == ".zarr":
        zarr = pytest.importorskip("zarr")
        zarr.save_array(str(path), u)


@pytest.mark.parametrize("name, family", [("u.h5", "sfno"), ("u.npy", "fno"), ("u.pt", "sfno"), ("u.mat", "fno"),
                                          ("u.zarr", "sfno")])
def test_every_format_trains(tmp_path, name, family, one_thread):
    write(tmp_path / name, trajectories())
    _, metrics = run(tmp_path, family, ["data=file", f"data.path={tmp_path / name}"])
    assert np.isfinite(metrics["test/rel_l2"]) and metrics["test/rel_l2"] < metrics["test/rel_l2_persistence"] * 5


@pytest.mark.parametrize("family", ["lsm", "mg_tfno"])
def test_other_fourier_families_take_several_fields(tmp_path, family, one_thread):
    np.savez(tmp_path / "two.npz", a=trajectories(), b=trajectories(seed=2))
    _, metrics = run(tmp_path, family, ["data=file", f"data.path={tmp_path / 'two.npz'}", "data.keys=[a,b]"])
    assert np.isfinite(metrics["test/rel_l2"])


def test_pdebench_fields_train_fno(tmp_path, one_thread):
    """PDEBench's CFD layout: density, Vx, Vy, pressure as top-level (N, T, X, Y) arrays."""
    u = trajectories(n=20, channels=4)
    with h5py.File(tmp_path / "cfd.hdf5", "w") as f:
        for c, name in enumerate(("density", "Vx", "Vy", "pressure")):
            f[name] = u[..., c]
        f["x-coordinate"] = f["y-coordinate"] = (np.arange(16) + 0.5) / 16
        f["t-coordinate"] = 0.05 * np.arange(9)
    out, metrics = run(tmp_path, "fno", ["data=pdebench", f"data.path={tmp_path / 'cfd.hdf5'}"])
    assert np.isfinite(metrics["test/rel_l2"])
    spec = yaml.safe_load((out / "config.yaml").read_text())["data"]["spec"]
    assert spec["channels"] == 4 and spec["dt_snap"] == pytest.approx(0.05)


def test_observer_trains_and_assimilates_on_a_1d_file(tmp_path, one_thread):
    from neuropde.run import predict, train

    x = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    t = 0.2 * np.arange(24)
    u = np.sin(x[None, None] + t[None, :, None] + np.arange(12)[:, None, None]).astype(np.float32)
    np.save(tmp_path / "waves.npy", u)
    out = tmp_path / "obs"
    train(compose("train", ["experiment=observer_tiny", "data=file", f"data.path={tmp_path / 'waves.npy'}",
                            "data.window.t_in=4", "data.window.t_out=8", "data.window.stride=8",
                            "data.window.eval_stride=8", "data.loader.batch_size=4", "trainer.max_epochs=1",
                            f"run_dir={out}"]))
    result = predict(compose("predict", [f"ckpt={out}", "assimilate=true", f"run_dir={tmp_path / 'pred'}"]))
    assert result["steps"] == 24 - 4 and np.isfinite(result["rel_l2"])


def test_loader_workers_read_the_same_windows(tmp_path):
    """Each DataLoader worker opens its own HDF5 handle: the windows equal those read in-process,
    and the data module never holds the split in memory (its sources are file readers)."""
    import torch

    from neuropde.data.files import FileDataModule, SourceWindows

    with h5py.File(tmp_path / "u.h5", "w") as f:
        f["u"] = trajectories(n=10)
    cfg = compose("train", ["model=fno", "data=file", f"data.path={tmp_path / 'u.h5'}", "data.window.t_in=2",
                            "data.window.t_out=2", "data.loader.batch_size=4"])
    from neuropde.run import describe_data, to_dict

    describe_data(cfg)
    batches = {}
    for workers in (0, 2):
        data = {**to_dict(cfg.data), "loader": {"batch_size": 4, "num_workers": workers}}
        dm = FileDataModule(data, tmp_path)
        dm.setup("fit")
        assert isinstance(dm.train_dataloader().dataset, SourceWindows)
        batches[workers] = [torch.cat(b, 1) for b in dm.val_dataloader()]
        dm.teardown()
    assert len(batches[0]) == len(batches[2]) > 0
    assert all(torch.equal(a, b) for a, b in zip(batches[0], batches[2]))


# --------------------------------------------------------------------------------------- bad files
def refused(tmp_path: Path, overrides: list[str], match: str) -> None:
    """Training on these data is refused with ``match`` in one line, and nothing claims success."""
    from neuropde.run import train

    out = tmp_path / "refused"
    with pytest.raises(UserError, match=match) as err:
        train(compose("train", ["model=fno", *FAMILY["fno"], *TINY, *overrides, f"run_dir={out}"]))
    assert "\n" not in str(err.value)
    assert not (out / "metrics.json").exists() and not (out / "checkpoints").exists()


def test_not_a_mat_file(tmp_path):
    (tmp_path / "fake.mat").write_bytes(b"MATLAB? no")
    refused(tmp_path, ["data=file", f"data.path={tmp_path / 'fake.mat'}"], "fake.mat")


def test_an_empty_split(tmp_path):
    np.save(tmp_path / "train.npy", trajectories(n=4))
    np.save(tmp_path / "val.npy", trajectories(n=0))
    np.save(tmp_path / "test.npy", trajectories(n=2))
    refused(tmp_path, ["data=file", f"data.path={tmp_path}"], "empty")


def test_nan_in_a_split_is_found_before_training(tmp_path):
    u = trajectories(n=20)
    u[17, 3, 2, 2] = np.nan                                          # a sample of the seeded test or val split
    np.savez(tmp_path / "nan.npz", u=u)
    refused(tmp_path, ["data=file", f"data.path={tmp_path / 'nan.npz'}"], "NaN|Inf")


def test_missing_key_lists_the_keys(tmp_path):
    np.savez(tmp_path / "d.npz", vorticity=trajectories())
    refused(tmp_path, ["data=file", f"data.path={tmp_path / 'd.npz'}", "data.keys=[u]"], "vorticity")


def test_not_an_hdf5_file(tmp_path):
    (tmp_path / "fake.h5").write_text("not hdf5")
    refused(tmp_path, ["data=file", f"data.path={tmp_path / 'fake.h5'}"], "fake.h5")


def test_wrong_rank(tmp_path):
    np.savez(tmp_path / "flat.npz", u=np.zeros((4, 16), np.float32))
    refused(tmp_path, ["data=file", f"data.path={tmp_path / 'flat.npz'}"], "layout")


def test_splits_with_different_grids(tmp_path):
    for split, size in (("train", 16), ("val", 16), ("test", 12)):
        np.save(tmp_path / f"{split}.npy", trajectories(n=4, size=size))
    refused(tmp_path, ["data=file", f"data.path={tmp_path}"], "grid|shape")


def test_missing_path(tmp_path):
    refused(tmp_path, ["data=file", f"data.path={tmp_path / 'nowhere.h5'}"], "nowhere")


def test_grid_too_coarse_for_the_modes(tmp_path):
    np.savez(tmp_path / "coarse.npz", u=trajectories(size=3))    # an FNO with modes [4, 4] needs 4 points per axis
    refused(tmp_path, ["data=file", f"data.path={tmp_path / 'coarse.npz'}"], r"modes \[4, 4\] needs .*\[4, 4\].*\[3, 3\]")


def test_phirom_refuses_files_of_no_known_equation(tmp_path):
    from neuropde.run import train

    np.save(tmp_path / "u.npy", trajectories()[:, :, 0])          # (N, T, X): 1-D trajectories
    with pytest.raises(UserError, match="model=phirom.*no known equation"):
        train(compose("train", ["model=phirom", "data=file", f"data.path={tmp_path / 'u.npy'}",
                                f"run_dir={tmp_path / 'run'}"]))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_in_memory_reads_once_and_finds_nan(tmp_path):
    u = trajectories(n=20)
    np.savez(tmp_path / "ok.npz", u=u)
    _, lazy = run(tmp_path, "fno", ["data=file", f"data.path={tmp_path / 'ok.npz'}"], name="lazy")
    _, held = run(tmp_path, "fno", ["data=file", f"data.path={tmp_path / 'ok.npz'}", "data.in_memory=true"], name="held")
    assert held["test/rel_l2"] == pytest.approx(lazy["test/rel_l2"], rel=1e-5)  # the same windows, the same run
    u[3, 1, 0, 0] = np.inf
    np.savez(tmp_path / "bad.npz", u=u)
    refused(tmp_path, ["data=file", f"data.path={tmp_path / 'bad.npz'}", "data.in_memory=true"], "NaN/Inf")


@pytest.mark.parametrize("family", ["sfno", "observer"])
def test_periodic_only_models_refuse_walls(tmp_path, family):
    from neuropde.run import train

    np.savez(tmp_path / "u.npz", u=trajectories())
    with pytest.raises(UserError, match=f"model={family} takes periodic fields.*model=fno"):
        train(compose("train", [f"model={family}", "data=file", f"data.path={tmp_path / 'u.npz'}",
                                "data.periodic=[true,false]", f"run_dir={tmp_path / 'run'}"]))
