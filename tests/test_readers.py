"""Readers of users' data (format file / well / pdebench): windows equal the arrays written,
The Well's windows equal the_well's own WellDataset, and every bad input is one clear UserError."""
import pickle

import h5py
import numpy as np
import pytest
import torch

from neuropde.data.arrays import open_arrays
from neuropde.data.readers import FieldSource, open_splits, scan
from neuropde.errors import UserError

RNG = np.random.default_rng(0)
U = RNG.standard_normal((10, 6, 8, 4)).astype(np.float32)  # (N, T, X, Y)


def expected(src: FieldSource, full: np.ndarray, i: int) -> np.ndarray:
    """Trajectory i of a split of ``full`` (N, T, X, Y) as (T, 1, X, Y)."""
    return full[int(src.index[i])][:, None]


def write(path, fmt: str, arrays: dict):
    if fmt == "h5":
        with h5py.File(path, "w") as f:
            for k, v in arrays.items():
                f.create_dataset(k, data=v)
    elif fmt == "npz":
        np.savez(path, **arrays)
    elif fmt == "npz_compressed":
        np.savez_compressed(path, **arrays)
    elif fmt == "npy":
        np.save(path, next(iter(arrays.values())))
    elif fmt == "pt":
        torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, path)
    return path


# ----------------------------------------------------------------------------- format: file

@pytest.mark.parametrize("fmt,ext", [("h5", "h5"), ("npz", "npz"), ("npz_compressed", "npz"),
                                     ("npy", "npy"), ("pt", "pt")])
def test_file_formats_read_back_the_arrays_written(tmp_path, fmt, ext):
    path = write(tmp_path / f"d.{ext}", fmt, {"u": U})
    cfg = {"format": "file", "path": str(path), "seed": 3, "split": [0.6, 0.2, 0.2]}
    if fmt != "npy":
        cfg["keys"] = ["u"]
    splits = open_splits(cfg)
    assert [len(s) for s in splits.values()] == [6, 2, 2]
    seen = np.concatenate([s.index for s in splits.values()])
    assert sorted(seen) == list(range(10))  # the split partitions the samples
    src = splits["val"]
    assert src.info.space == (8, 4) and src.info.n_frames == 6 and src.info.kind == "trajectory"
    out = src.frames(1, 2, 5)
    assert out.dtype == np.float32 and np.array_equal(out, expected(src, U, 1)[2:5])


def test_split_of_one_file_is_seeded(tmp_path):
    path = write(tmp_path / "d.npy", "npy", {"u": U})
    def index(seed):
        return open_splits({"format": "file", "path": str(path), "seed": seed})["train"].index

    assert np.array_equal(index(1), index(1)) and not np.array_equal(index(1), index(2))


def test_stored_arrays_are_mapped_not_read(tmp_path):
    write(tmp_path / "d.npz", "npz", {"u": U})
    write(tmp_path / "d.npy", "npy", {"u": U})
    assert isinstance(open_arrays(tmp_path / "d.npz")[0]["u"], np.memmap)
    assert isinstance(open_arrays(tmp_path / "d.npy")[0][None], np.memmap)


def test_matlab_v5_and_v73_files_in_matlab_axis_order(tmp_path):
    from scipy.io import savemat

    mat = U.transpose(0, 2, 3, 1)  # MATLAB order N X Y T, like the FNO benchmark's ns_*.mat
    savemat(tmp_path / "v5.mat", {"u": mat, "a": mat[:, :, :, 0]})
    with h5py.File(tmp_path / "v73.mat", "w", userblock_size=512) as f:  # v7.3: HDF5, column-major
        f.create_dataset("u", data=mat.T)
    for name in ("v5.mat", "v73.mat"):
        splits = open_splits({"format": "file", "path": str(tmp_path / name), "keys": "u",
                              "layout": "N X Y T"})
        src = splits["test"]
        assert src.info.space == (8, 4) and src.info.n_frames == 6
        assert np.array_equal(src.frames(0, 0, 6), expected(src, U, 0)), name


def test_keys_stack_as_channels_and_layout_letters_reorder_axes(tmp_path):
    v = -U
    write(tmp_path / "d.h5", "h5", {"u": U.transpose(0, 2, 3, 1), "v": v.transpose(0, 2, 3, 1)})
    src = open_splits({"format": "file", "path": str(tmp_path / "d.h5"), "keys": ["u", "v"],
                       "layout": "N X Y T"})["train"]
    assert src.info.channels == ["u", "v"]
    n = int(src.index[0])
    assert np.array_equal(src.frames(0, 1, 3), np.stack([U[n, 1:3], v[n, 1:3]], axis=1))
    # a channel axis: names get the channel number
    write(tmp_path / "c.npz", "npz", {"w": np.stack([U, v], axis=-1)})
    src = open_splits({"format": "file", "path": str(tmp_path / "c.npz"), "keys": ["w"],
                       "layout": "N T X Y C"})["train"]
    n = int(src.index[2])
    assert src.info.channels == ["w_0", "w_1"]
    assert np.array_equal(src.frames(2, 0, 6), np.stack([U[n], v[n]], axis=1))


def test_pairs_give_two_frames_input_then_output(tmp_path):
    a, u = U[:, 0], U[:, 1] * 2
    write(tmp_path / "d.npz", "npz", {"a": a, "u": u})
    src = open_splits({"format": "file", "path": str(tmp_path / "d.npz"), "input_key": "a",
                       "output_key": "u"})["train"]
    assert src.info.kind == "pair" and src.info.n_frames == 2 and src.info.channels == ["a->u"]
    n = int(src.index[0])
    assert np.array_equal(src.frames(0, 0, 2), np.stack([a[n], u[n]])[:, None])
    assert np.array_equal(src.frames(0, 1, 2), u[n][None, None])
    stats = scan(src, "train")
    assert np.isclose(stats["out_mean"][0], u[src.index].mean(), atol=1e-6)
    write(tmp_path / "bad.npz", "npz", {"a": a, "u": np.stack([u, u], axis=-1)})
    with pytest.raises(UserError, match="same channel count"):
        open_splits({"format": "file", "path": str(tmp_path / "bad.npz"), "input_key": "a",
                     "output_key": "u", "layout": {"a": "N X Y", "u": "N X Y C"}})


def test_directory_of_split_files_and_config_geometry(tmp_path):
    for split, n in (("train", 6), ("valid", 2), ("test", 2)):
        np.save(tmp_path / f"{split}.npy", U[:n])
    splits = open_splits({"format": "file", "path": str(tmp_path), "periodic": [True, False],
                          "extent": 2.0, "dt": 0.5})
    assert [len(s) for s in splits.values()] == [6, 2, 2]
    info = splits["val"].info
    assert info.periodic == [True, False] and info.extent == [2.0, 2.0] and info.dt == 0.5
    assert np.array_equal(splits["val"].frames(1, 0, 6), U[1][:, None])
    np.save(tmp_path / "test.npy", U[:2, :, :4])
    with pytest.raises(UserError, match="splits differ"):
        open_splits({"format": "file", "path": str(tmp_path)})
    with pytest.raises(UserError, match="spatial axes"):
        open_splits({"format": "file", "path": str(tmp_path / "train.npy"), "periodic": [True] * 3})


def test_sources_pickle_and_read_in_worker_processes(tmp_path):
    path = write(tmp_path / "d.h5", "h5", {"u": U})
    src = open_splits({"format": "file", "path": str(path), "keys": ["u"]})["train"]
    src.frames(0, 0, 1)  # the handle is open in this process ...
    clone = pickle.loads(pickle.dumps(src))  # ... and is not pickled
    assert clone._handles is None and np.array_equal(clone.frames(3, 0, 6), src.frames(3, 0, 6))

    class Frames(torch.utils.data.Dataset):
        def __len__(self):
            return len(src)

        def __getitem__(self, i):
            return src.frames(i, 0, 2)

    loader = torch.utils.data.DataLoader(Frames(), batch_size=len(src), num_workers=1,
                                         multiprocessing_context="fork")
    batch = next(iter(loader)).numpy()
    assert np.array_equal(batch, np.stack([src.frames(i, 0, 2) for i in range(len(src))]))
    src.close()


# ----------------------------------------------------------------------------- format: well

def well_dataset(root, augment: bool = False):
    """The_well's dummy files in data/{train,valid,test}/ (two files in train); ``augment`` adds
    what the dummy lacks: a time-varying scalar field, a tensor field, a constant stored once
    along y and periodic x ends."""
    from the_well.utils.dummy_data import write_dummy_data

    np.random.seed(1)
    files = [("train", "a"), ("train", "b"), ("valid", "a"), ("test", "a")]
    for split, name in files:
        (root / "data" / split).mkdir(parents=True, exist_ok=True)
        path = root / "data" / split / f"{name}.hdf5"
        write_dummy_data(str(path))
        if augment:
            with h5py.File(path, "a") as f:
                def add(order, name, data, time_varying, sample_varying=True, dims=(True, True)):
                    group = f[f"t{order}_fields"]
                    group.attrs["field_names"] = list(group.attrs["field_names"]) + [name]
                    ds = group.create_dataset(name, data=data.astype(np.float32))
                    ds.attrs.update(time_varying=time_varying, sample_varying=sample_varying,
                                    dim_varying=list(dims))
                add(0, "pressure", np.random.rand(2, 10, 32, 32), True)
                add(2, "stress", np.random.rand(2, 10, 32, 32, 2, 2), True)
                add(0, "mask", np.random.rand(32, 1), False, sample_varying=False, dims=(True, False))
                f["boundary_conditions/x_periodic/mask"][[0, -1]] = True


@pytest.mark.parametrize("augment", [False, True])
def test_well_windows_equal_the_wells_own_reader(tmp_path, augment):
    from the_well.data import WellDataset

    well_dataset(tmp_path, augment)
    splits = open_splits({"format": "well", "path": str(tmp_path)})
    src = splits["train"]
    reference = WellDataset(path=str(tmp_path / "data" / "train"), n_steps_input=2, n_steps_output=3,
                            use_normalization=False)
    windows = src.info.n_frames - 5 + 1
    assert len(src) == 4 and len(reference) == len(src) * windows  # 2 files x 2 trajectories
    for k in (0, windows + 1, 2 * windows + 3, len(reference) - 1):  # both files, both trajectories
        i, start = divmod(k, windows)
        sample = reference[k]
        ours = src.frames(i, start, start + 5)
        theirs = torch.cat([sample["input_fields"], sample["output_fields"]]).permute(0, 3, 1, 2)
        assert np.array_equal(ours, theirs.numpy())
        assert np.array_equal(src.constants(i), sample["constant_fields"].permute(2, 0, 1).numpy())
    assert src.info.channels == sum(reference.metadata.field_names.values(), [])
    assert src.info.constants == sum(reference.metadata.constant_field_names.values(), [])
    assert src.info.periodic == (reference[0]["boundary_conditions"] == 2).any(dim=1).tolist()
    assert src.info.dt == pytest.approx(1 / 9) and src.info.space == (32, 32)
    clone = pickle.loads(pickle.dumps(src))
    assert np.array_equal(clone.frames(3, 2, 4), src.frames(3, 2, 4))
    stats = scan(src, "train")
    constant = []
    for name in ("a", "b"):
        with h5py.File(tmp_path / "data" / "train" / f"{name}.hdf5") as f:
            constant.append(f["t0_fields/constant_field"][()])
    constant = np.concatenate(constant)
    assert stats["constants_mean"][0] == pytest.approx(constant.mean(), rel=1e-6)
    if augment:
        assert src.info.channels[:3] == ["pressure", "field_x", "field_y"] and src.info.periodic == [True, False]


def test_well_field_selection(tmp_path):
    well_dataset(tmp_path)
    src = open_splits({"format": "well", "path": str(tmp_path / "data"), "fields": ["field"]})["test"]
    assert src.info.constants == [] and src.constants(0) is None
    with pytest.raises(UserError, match="fields present: constant_field, field"):
        open_splits({"format": "well", "path": str(tmp_path), "fields": ["velocity"]})


# ----------------------------------------------------------------------------- format: pdebench

def test_pdebench_layout_a_cfd_and_its_own_split(tmp_path):
    path = tmp_path / "2D_CFD.hdf5"
    fields = {k: RNG.standard_normal((20, 5, 8, 8)).astype(np.float32)
              for k in ("Vx", "Vy", "density", "pressure")}
    with h5py.File(path, "w") as f:
        for k, v in fields.items():
            f[k] = v
        f["x-coordinate"] = f["y-coordinate"] = (np.arange(8) + 0.5) / 8
        f["t-coordinate"] = np.linspace(0, 1, 6)  # PDEBench stores T + 1 times
    splits = open_splits({"format": "pdebench", "path": str(path)})
    assert [s.index.tolist() for s in splits.values()] == [list(range(2, 19)), [19], [0, 1]]
    src = splits["train"]
    assert src.info.channels == ["density", "pressure", "Vx", "Vy"]  # PDEBench's channel order
    assert src.info.extent == pytest.approx([1.0, 1.0]) and src.info.dt == pytest.approx(0.2)
    assert src.info.periodic == [True, True]
    want = np.stack([fields[k][2, 1:4] for k in src.info.channels], axis=1)
    assert np.array_equal(src.frames(0, 1, 4), want)


def test_pdebench_darcy_files_are_pairs(tmp_path):
    path = tmp_path / "2D_DarcyFlow.hdf5"
    nu, u = RNG.random((20, 8, 8)), RNG.random((20, 1, 8, 8))
    with h5py.File(path, "w") as f:
        f["nu"], f["tensor"] = nu, u
    src = open_splits({"format": "pdebench", "path": str(path)})["test"]
    assert src.info.kind == "pair" and src.index.tolist() == [0, 1]
    assert np.allclose(src.frames(0, 0, 2), np.stack([nu[0], u[0, 0]])[:, None])


def test_pdebench_layout_b_groups(tmp_path):
    path = tmp_path / "2D_diff-react.h5"
    data = RNG.standard_normal((10, 4, 8, 8, 2)).astype(np.float32)
    with h5py.File(path, "w") as f:
        for n in range(10):
            f[f"{n:04d}/data"] = data[n]
            f[f"{n:04d}/grid/x"] = f[f"{n:04d}/grid/y"] = np.linspace(-1, 1, 9)[:-1] + 0.125
            f[f"{n:04d}/grid/t"] = np.linspace(0, 0.3, 4)
    splits = open_splits({"format": "pdebench", "path": str(path), "val_fraction": 0.25, "periodic": False})
    assert [s.index.tolist() for s in splits.values()] == [list(range(7)), [7, 8], [9]]  # test: the last
    src = splits["test"]
    assert src.info.channels == ["u_0", "u_1"] and src.info.periodic == [False, False]
    assert src.info.extent == pytest.approx([2.0, 2.0]) and src.info.dt == pytest.approx(0.1)
    assert np.array_equal(src.frames(0, 0, 4), data[9].transpose(0, 3, 1, 2))
    assert "0009" in src.where(0)


# ----------------------------------------------------------------------------- scan

def test_scan_statistics_and_nan_location(tmp_path):
    two = np.stack([U, 3 * U + 1], axis=2)  # (N, T, C, X, Y)
    np.save(tmp_path / "d.npy", two)
    src = open_splits({"format": "file", "path": str(tmp_path / "d.npy"), "layout": "N T C X Y"})["train"]
    stats = scan(src, "train", chunk_frames=4)  # chunks that do not divide the 6 frames
    picked = two[np.asarray(src.index)]
    assert np.allclose(stats["mean"], picked.mean(axis=(0, 1, 3, 4)), atol=1e-6)
    assert np.allclose(stats["std"], picked.std(axis=(0, 1, 3, 4)), rtol=1e-6)
    assert stats["constants_mean"] == []
    two[int(src.index[3]), 5, 1, 2, 2] = np.nan
    np.save(tmp_path / "d.npy", two)
    with pytest.raises(UserError, match=r"train sample 3, frame 5, channel 'u_1' holds NaN/Inf \(.*d\.npy"):
        scan(src, "train", chunk_frames=4)


# ----------------------------------------------------------------------------- bad input

def test_bad_inputs_say_what_to_do(tmp_path):
    write(tmp_path / "d.h5", "h5", {"u": U, "v": U})
    h5 = {"format": "file", "path": str(tmp_path / "d.h5")}
    cases = [
        ({**h5, "keys": ["w"]}, r"no key 'w'; keys present: u, v"),
        (h5, "set data.keys"),
        ({**h5, "keys": "u", "layout": "N T X"}, "rank 4 but data.layout 'N T X' names 3 axes"),
        ({**h5, "keys": "u", "layout": "N X Y Q"}, "letters N T C X Y Z"),
        ({**h5, "keys": "u", "layout": "N C X Y"}, "no T axis"),
        ({**h5, "path": str(tmp_path / "nowhere.h5")}, "does not exist"),
        ({**h5, "keys": "u", "split": [0.9, 0.1, 0.0]}, "split test would be empty"),
        ({"format": "well", "path": str(tmp_path)}, "data/{train,valid,test}"),
        ({"format": "pdebench", "path": str(tmp_path / "d.h5")}, "not a PDEBench file"),
        ({"format": "csv", "path": str(tmp_path / "d.h5")}, "use file, well or pdebench"),
    ]
    np.save(tmp_path / "r5.npy", U[..., None, None])
    cases.append(({"format": "file", "path": str(tmp_path / "r5.npy")}, "rank 6: set data.layout"))
    for name in ("fake.mat", "fake.h5"):
        (tmp_path / name).write_bytes(b"not a matrix at all" * 40)
        cases.append(({"format": "file", "path": str(tmp_path / name)}, f"{name} is (neither|not)"))
    for cfg, message in cases:
        with pytest.raises(UserError, match=message):
            open_splits(cfg)


def test_zarr_missing_is_one_line_and_read_when_present(tmp_path, monkeypatch):
    store = tmp_path / "d.zarr"
    store.mkdir()
    monkeypatch.setitem(__import__("sys").modules, "zarr", None)  # as if not installed
    with pytest.raises(UserError, match="pip install zarr"):
        open_splits({"format": "file", "path": str(store)})


def test_zarr_store_reads_like_the_others(tmp_path):
    zarr = pytest.importorskip("zarr")
    group = zarr.open_group(str(tmp_path / "d.zarr"), mode="w")
    group.create_array("u", data=U) if hasattr(group, "create_array") else group.array("u", U)
    src = open_splits({"format": "file", "path": str(tmp_path / "d.zarr"), "keys": ["u"]})["train"]
    assert np.array_equal(src.frames(0, 0, 6), expected(src, U, 0))
