"""Data-set export (neuropde/data/exporters.py): a generated set written in The Well's schema reads back
through the_well's own WellDataset with the store's numbers, coordinates, boundary conditions and
statistics; the PDEBench file holds every split in order with its coordinates; generate.py's
``export=`` option; one-line refusals."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from neuropde.data.store import SPLITS
from neuropde.errors import UserError
from tests.conftest import compose

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["data=ns2d_tiny", "data.samples.train=3", "data.samples.val=2", "data.samples.test=2"]


def _generated(data_root, tmp_path, overrides, export=None):
    """Run neuropde.run.generate on a composed config: (info, data config dict)."""
    from neuropde.run import generate, to_dict

    extra = [f"export={export}", f"export_dir={tmp_path / 'out'}"] if export else []
    cfg = compose("generate", [*overrides, *extra])
    return generate(cfg), to_dict(cfg.data)


def _store(info, split):
    with h5py.File(info["files"][split], "r") as f:
        return f["fields"][...], f["times"][...]


@pytest.fixture(scope="module")
def ns2d(data_root, tmp_path_factory):
    return _generated(data_root, tmp_path_factory.mktemp("ns2d"), TINY)


def test_well_export_reads_back_through_the_well(ns2d, tmp_path):
    from the_well.data import WellDataset
    from the_well.data.normalization import ZScoreNormalization

    from neuropde.data.exporters import export_well

    info, data_cfg = ns2d
    out = export_well(info["dir"], data_cfg, tmp_path / "well")
    for split, well_split in zip(SPLITS, ("train", "valid", "test")):
        assert (out / "data" / well_split / "ns2d_tiny.hdf5").exists()
    fields, times = _store(info, "val")  # (2, 8, 32, 32)
    ds = WellDataset(path=str(out / "data" / "valid"), n_steps_input=2, n_steps_output=3)
    assert ds.metadata.field_names[0] == ["vorticity"]
    assert ds.metadata.spatial_resolution == (32, 32)
    assert ds.metadata.constant_scalar_names == ["L", "nu"]
    windows = fields.shape[1] - 5 + 1  # per trajectory
    assert len(ds) == len(fields) * windows
    sample = ds[windows + 2]  # trajectory 1, frames 2..6
    np.testing.assert_array_equal(sample["input_fields"][..., 0].numpy(), fields[1, 2:4])
    np.testing.assert_array_equal(sample["output_fields"][..., 0].numpy(), fields[1, 4:7])
    np.testing.assert_allclose(sample["output_time_grid"].numpy(), times[4:7] - times[2])  # relative times
    assert (sample["boundary_conditions"] == 2).all()  # PERIODIC on both sides of both axes
    np.testing.assert_allclose(sample["constant_scalars"].numpy(), [1.0, 1e-3])
    grid = sample["space_grid"].numpy()  # (32, 32, 2): x varies along the first axis, period L = 1
    np.testing.assert_allclose(grid[:, 0, 0], np.arange(32) / 32)
    np.testing.assert_allclose(grid[0, :, 1], np.arange(32) / 32)

    # stats.yaml: z-scoring with it gives the training split zero mean and unit variance
    train, _ = _store(info, "train")
    normed = WellDataset(path=str(out), well_split_name="train", n_steps_input=train.shape[1] - 1,
                         use_normalization=True, normalization_type=ZScoreNormalization)
    x = np.concatenate([np.concatenate([normed[i]["input_fields"], normed[i]["output_fields"]]) for i in range(len(normed))])
    assert abs(x.mean()) < 1e-5 and abs(x.std() - 1) < 1e-4


def test_our_readers_read_our_exports_back(ns2d, tmp_path):
    """data=well on the Well export and data=pdebench on the PDEBench export give the store's fields."""
    from neuropde.data.exporters import export_pdebench, export_well
    from neuropde.data.readers import open_splits

    info, data_cfg = ns2d
    well = open_splits({"format": "well", "path": str(export_well(info["dir"], data_cfg, tmp_path / "well"))})
    for split in ("train", "val", "test"):
        fields, times = _store(info, split)
        read = np.stack([well[split].frames(i, 0, fields.shape[1]) for i in range(len(well[split]))])
        np.testing.assert_array_equal(read[:, :, 0], fields)
        assert well[split].info.periodic == [True, True]
        assert well[split].info.dt == pytest.approx(float(times[1] - times[0]), rel=1e-5)
    path = export_pdebench(info["dir"], data_cfg, tmp_path / "pdebench")
    pde = open_splits({"format": "pdebench", "path": str(path), "test_fraction": 0.3, "val_fraction": 0.4})
    test, _ = _store(info, "test")  # the first rows: PDEBench's test samples
    np.testing.assert_array_equal(np.stack([pde["test"].frames(i, 0, 8)[:, 0] for i in range(2)]), test)


def test_pdebench_export_holds_every_split_in_order(ns2d, tmp_path):
    from neuropde.data.exporters import export_pdebench

    info, data_cfg = ns2d
    path = export_pdebench(info["dir"], data_cfg, tmp_path / "pdebench")
    assert path == tmp_path / "pdebench" / "ns2d_tiny.hdf5"
    with h5py.File(path, "r") as f:
        stored = [_store(info, s)[0] for s in ("test", "train", "val")]  # PDEBench tests on the first rows
        np.testing.assert_array_equal(f["tensor"][...], np.concatenate(stored))
        assert f["tensor"].shape == (7, 8, 32, 32)
        np.testing.assert_allclose(f["x-coordinate"][...], np.arange(32) / 32)
        np.testing.assert_allclose(f["y-coordinate"][...], np.arange(32) / 32)
        np.testing.assert_allclose(f["t-coordinate"][...], _store(info, "test")[1], rtol=1e-6)
        assert [list(f.attrs[f"neuropde.rows.{s}"]) for s in ("test", "train", "val")] == [[0, 2], [2, 5], [5, 7]]
        assert f.attrs["nu"] == 1e-3


def test_pdebench_export_of_pairs_is_pdebench_darcy_layout(data_root, tmp_path):
    """darcy stores [a, u] as two frames: PDEBench's Darcy files hold a as ``nu``, u as ``tensor`` (N, 1, X, Y)."""
    from neuropde.data.exporters import export_pdebench

    info, data_cfg = _generated(data_root, tmp_path, ["data=darcy_tiny", "data.samples.train=2",
                                                      "data.samples.val=1", "data.samples.test=1"])
    path = export_pdebench(info["dir"], data_cfg, tmp_path / "darcy.h5")
    pairs = np.concatenate([_store(info, s)[0] for s in ("test", "train", "val")])  # (4, 2, 29, 29)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["nu"][...], pairs[:, 0])
        np.testing.assert_array_equal(f["tensor"][...], pairs[:, 1:])
        np.testing.assert_allclose(f["x-coordinate"][...], np.linspace(0, 1, 29))  # nodes on the boundary


def test_generate_exports_and_reports_where(data_root, tmp_path, capsys):
    from the_well.data import WellDataset

    info, _ = _generated(data_root, tmp_path, ["data=ks_tiny"], export="well")
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["export"] == str(tmp_path / "out")
    ds = WellDataset(path=str(tmp_path / "out"), well_split_name="test", n_steps_input=4)
    fields, _ = _store(info, "test")
    np.testing.assert_array_equal(ds[0]["input_fields"][..., 0].numpy(), fields[0, :4])
    assert ds.metadata.field_names[0] == ["u"] and ds[0]["space_grid"].shape == (32, 1)

    info, _ = _generated(data_root, tmp_path, ["data=ks_tiny"], export="pdebench")
    assert info["export"] == str(tmp_path / "out" / "ks_tiny.hdf5")


def test_export_default_dir_is_under_the_data_root(data_root, tmp_path):
    from neuropde.run import generate

    info = generate(compose("generate", [*TINY, "export=pdebench"]))
    assert info["export"] == str(data_root / "ns2d_tiny_pdebench" / "ns2d_tiny.hdf5")


@pytest.mark.parametrize("overrides, message", [
    (["data=ks_tiny", "export=zarr"], "export=zarr is not an option; choose one of well, pdebench"),
    (["data=darcy_tiny", "export=well"], "export=well takes trajectory data sets; data=never_made is pair2d"),
])
def test_bad_export_is_one_line_before_generating(data_root, overrides, message):
    from neuropde.run import generate

    with pytest.raises(UserError, match=message) as err:
        generate(compose("generate", [*overrides, "data.name=never_made"]))
    assert "\n" not in str(err.value)
    assert not (data_root / "never_made").exists()
