"""Data store (atomic, resumable, manifest-checked), NS generator and windows."""
import copy

import h5py
import numpy as np
import pytest
import torch

from neuropde.data.datamodule import TrajectoryDataModule, TrajectoryWindows
from neuropde.data.generators import data_store, ensure_generated
from neuropde.data.store import DataStore
from neuropde.errors import UserError
from tests.conftest import compose


def fake_shards(calls, fail_at=None):
    def make(start, stop):
        if fail_at is not None and start >= fail_at:
            raise KeyboardInterrupt("simulated interruption")
        calls.append(start)
        fields = np.stack([np.full((3, 4, 4), i, dtype=np.float32) for i in range(start, stop)])
        return fields, np.arange(3) * 0.5
    return make


def test_interrupted_generation_leaves_nothing_complete_and_resumes(tmp_path):
    store = DataStore(tmp_path / "d", {"a": 1})
    calls = []
    with pytest.raises(KeyboardInterrupt):
        store.write_split("train", 10, 3, fake_shards(calls, fail_at=6), attrs={"a": 1}, progress=False)
    assert not store.path("train").exists() and not store.is_complete("train")
    assert calls == [0, 3]
    store.write_split("train", 10, 3, fake_shards(calls), attrs={"a": 1}, progress=False)
    assert calls == [0, 3, 6, 9]  # the two finished shards were not redone
    assert store.is_complete("train")
    fields, times, attrs = store.read("train")
    assert fields.shape == (10, 3, 4, 4) and np.array_equal(fields[:, 0, 0, 0], np.arange(10))
    assert attrs["a"] == 1 and np.allclose(times, [0, 0.5, 1.0])


def test_shards_that_report_progress_move_the_bar_within_the_shard(tmp_path):
    seen = []

    def make_shard(start, stop, progress=None):
        for fraction in (0.25, 0.5, 0.5, 1.0):
            progress(fraction)
            seen.append((start, fraction))
        return fake_shards([])(start, stop)

    store = DataStore(tmp_path / "d", {"a": 1})
    store.write_split("train", 5, 3, make_shard, attrs={}, progress=True)
    assert [s for s, _ in seen] == [0] * 4 + [3] * 4  # each shard was handed its callback
    fields, _, _ = store.read("train")
    assert np.array_equal(fields[:, 0, 0, 0], np.arange(5))


def test_ns_generation_reports_progress_and_gives_the_same_fields(tmp_path):
    from neuropde.data.generators import navier_stokes

    cfg = tiny_data_cfg()
    make_shard = navier_stokes(cfg, "test")
    fractions = []
    with_progress = make_shard(0, 2, progress=fractions.append)
    assert np.array_equal(with_progress[0], make_shard(0, 2)[0])
    assert fractions and fractions == sorted(fractions) and 0 < fractions[0] and fractions[-1] <= 1


@pytest.mark.parametrize("resolution", [-3, 0, 1.5, "64"])
def test_a_resolution_that_is_no_grid_is_refused_before_solving(tmp_path, resolution):
    from neuropde.errors import UserError

    cfg = tiny_data_cfg()
    cfg["resolution"] = resolution
    with pytest.raises(UserError, match="whole number of at least 2"):
        ensure_generated(cfg, tmp_path, progress=False)
    assert not any(tmp_path.iterdir())  # nothing written


def test_stale_or_corrupt_files_are_not_reused(tmp_path):
    store = DataStore(tmp_path / "d", {"a": 1})
    store.write_split("val", 4, 2, fake_shards([]), attrs={}, progress=False)
    assert store.is_complete("val")
    assert not DataStore(tmp_path / "d", {"a": 2}).is_complete("val")  # another config
    with h5py.File(store.path("val"), "r+") as f:
        f["fields"][0, 0, 0, 0] = 123.0  # same size, other content
    assert not store.is_complete("val")
    # regenerating under another config drops the old files first
    other = DataStore(tmp_path / "d", {"a": 2})
    other.write_split("val", 2, 2, fake_shards([]), attrs={}, progress=False)
    assert other.is_complete("val") and not store.is_complete("val")


def tiny_data_cfg(**gen):
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(compose("train", ["data=ns2d_tiny"]).data, resolve=True)
    cfg["samples"] = {"train": 2, "val": 1, "test": 2}
    cfg["generator"].update(gen)
    return cfg


def test_same_seed_same_solution_at_every_stored_resolution(tmp_path):
    cfg32 = tiny_data_cfg(solve_resolution=64)
    cfg64 = copy.deepcopy(cfg32)
    cfg64["resolution"] = 64
    a = ensure_generated(cfg32, tmp_path, splits=["test"], progress=False).read("test")[0]
    b = ensure_generated(cfg64, tmp_path, splits=["test"], progress=False).read("test")[0]
    assert a.shape == (2, 8, 32, 32) and b.shape == (2, 8, 64, 64)
    assert np.array_equal(a, b[..., ::2, ::2])
    # solved at 32² instead of 64²: the same physical trajectories up to discretisation error
    c = ensure_generated(tiny_data_cfg(), tmp_path, splits=["test"], progress=False).read("test")[0]
    assert np.linalg.norm(c - a) / np.linalg.norm(a) < 1e-2
    # and different samples differ
    assert np.linalg.norm(a[0] - a[1]) / np.linalg.norm(a[0]) > 0.5


def test_generated_file_layout(tmp_path):
    cfg = tiny_data_cfg()
    store = ensure_generated(cfg, tmp_path, splits=["val"], progress=False)
    assert store.dir == tmp_path / "ns2d_tiny" / "32"
    with h5py.File(store.path("val"), "r") as f:
        assert f["fields"].shape == (1, 8, 32, 32) and f["times"].shape == (8,)
        assert f.attrs["generator.nu"] == pytest.approx(1e-3) and f.attrs["seed"] == 0
        assert f.attrs["generator.solve_resolution"] == 32 and f.attrs["generator.dt"] > 0
    assert np.all(np.isfinite(store.read("val")[0]))
    assert data_store(cfg, tmp_path).is_complete("val")


def test_an_empty_split_is_refused_with_the_fix(tmp_path):
    from neuropde.errors import UserError

    cfg = tiny_data_cfg()
    cfg["samples"]["val"] = 0
    with pytest.raises(UserError, match="data.samples.val=0"):
        ensure_generated(cfg, tmp_path, splits=["val"], progress=False)


def test_windows_and_train_only_statistics(tmp_path):
    fields = torch.arange(2 * 7 * 2 * 2, dtype=torch.float32).reshape(2, 7, 2, 2)
    ds = TrajectoryWindows(fields, t_in=3, t_out=2, stride=1)
    assert len(ds) == 2 * 3
    x, y = ds[4]  # second trajectory, start 1
    assert torch.equal(x, fields[1, 1:4]) and torch.equal(y, fields[1, 4:6])
    assert len(TrajectoryWindows(fields, 3, 2, stride=None)) == 2
    with pytest.raises(ValueError, match="n_frames"):
        TrajectoryWindows(fields, 5, 5)

    cfg = tiny_data_cfg()
    dm = TrajectoryDataModule(cfg, tmp_path, progress=False)
    dm.prepare_data()
    dm.setup()
    train = dm.load("train")
    assert dm.stats["mean"] == pytest.approx(float(train.mean()), abs=1e-6)
    assert dm.stats["std"] == pytest.approx(float(train.std()), rel=1e-6)
    assert dm.stats["std"] != pytest.approx(float(dm.load("test").std()), rel=1e-6)


def test_concurrent_generation_waits_for_the_lock(tmp_path):
    """Two processes asking for the same data set: one generates, the other waits and reuses it."""
    import fcntl
    import threading
    import time

    cfg = tiny_data_cfg()
    store = data_store(cfg, tmp_path)
    store.dir.mkdir(parents=True)
    lock = open(store.dir / ".lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)  # someone else is generating
    done = []
    t = threading.Thread(target=lambda: done.append(ensure_generated(cfg, tmp_path, splits=["val"], progress=False)))
    t.start()
    time.sleep(0.5)
    assert not done and not store.path("val").exists()  # waiting, not generating beside the other
    fcntl.flock(lock, fcntl.LOCK_UN)
    lock.close()
    t.join(timeout=60)
    assert done and done[0].is_complete("val")


def test_the_data_config_names_its_parts_and_a_wrong_name_is_one_clear_line(tmp_path):
    """The data module and the generator come from the data config (``_target_``), not from a
    registry; a wrong equation or an unimportable generator is refused before anything is made."""
    from neuropde.run import build_datamodule

    cfg = compose("train", ["experiment=fno_tiny"])
    assert type(build_datamodule(cfg, progress=False)).__name__ == "TrajectoryDataModule"
    with pytest.raises(UserError, match="data.equation=my_h5, but the generator .*navier_stokes makes navier_stokes"):
        ensure_generated({**tiny_data_cfg(), "equation": "my_h5"}, tmp_path, progress=False)
    with pytest.raises(UserError, match="data.generator._target_=nope.gen cannot be imported"):
        ensure_generated(tiny_data_cfg(_target_="nope.gen"), tmp_path, progress=False)
    with pytest.raises(UserError, match="data._target_=nope.Module cannot be imported"):
        build_datamodule(compose("train", ["experiment=fno_tiny", "data._target_=nope.Module"]))
    assert not any(tmp_path.iterdir())  # nothing generated
