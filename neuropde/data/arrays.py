"""``format: file``: plain arrays in one file (split by a seeded draw) or in train/val/test files.

Extensions: .h5/.hdf5, .npz, .npy, .pt, .mat (v7.3 through h5py with MATLAB's column-major axes
reversed, older versions through scipy), .zarr (when zarr is installed). Keys are stacked as
channels; a layout string names the axes (N sample, T time, C channel, X Y Z space).
"""
from __future__ import annotations

import logging
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from neuropde.data.readers import (SPLIT_NAMES, FieldInfo, FieldSource, open_hdf5, per_axis,
                                   split_counts)
from neuropde.errors import UserError

log = logging.getLogger(__name__)

EXTENSIONS = {".h5": "h5", ".hdf5": "h5", ".mat": "mat", ".npz": "npz", ".npy": "npy",
              ".pt": "pt", ".pth": "pt", ".zarr": "zarr"}
AXES = "NTCXYZ"


def _npz_member(path: Path, key: str) -> np.ndarray:
    """A member of an .npz without reading it: stored (np.savez) members are memory-mapped in
    place; compressed ones (np.savez_compressed) cannot be and are read whole."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(key + ".npy")
        if info.compress_type == zipfile.ZIP_STORED:
            with open(path, "rb") as f:
                f.seek(info.header_offset + 26)
                name_len, extra_len = struct.unpack("<HH", f.read(4))
                f.seek(info.header_offset + 30 + name_len + extra_len)
                version = np.lib.format.read_magic(f)
                read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                               (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                if read_header is not None:
                    shape, fortran, dtype = read_header(f)
                    return np.memmap(path, dtype=dtype, mode="r", shape=shape, offset=f.tell(),
                                     order="F" if fortran else "C")
        log.warning("%s: member %s is compressed and is read whole; save with np.savez to read it lazily",
                    path, key)
        with z.open(info) as f:
            return np.lib.format.read_array(f)


class _NpzMembers(Mapping):
    """The members of an .npz, each mapped (or, compressed, read) on first use only."""

    def __init__(self, path: Path, keys: list[str]):
        self.path, self.keys_, self.cache = path, keys, {}

    def __getitem__(self, key):
        if key not in self.keys_:
            raise KeyError(key)
        if key not in self.cache:
            self.cache[key] = _npz_member(self.path, key)
        return self.cache[key]

    def __iter__(self):
        return iter(self.keys_)

    def __len__(self) -> int:
        return len(self.keys_)


def _h5_datasets(f) -> dict:
    import h5py

    found = {}

    def visit(name, obj):  # returns None: any other value would stop h5py's walk
        if isinstance(obj, h5py.Dataset):
            found[name] = obj

    f.visititems(visit)
    # MATLAB v7.3 keeps cell contents and objects under '#refs#' / '#subsystem#': not user arrays
    return {k: v for k, v in found.items() if not k.startswith("#")}


def open_arrays(path: Path) -> tuple[dict, bool]:
    """Every array of a file as ``{key: sliceable array}`` (lazy where the format allows) and
    whether its axes are reversed (MATLAB v7.3 files are HDF5 written column-major). A file
    holding one bare array (.npy, a tensor in a .pt) has the key None."""
    kind = EXTENSIONS.get(path.suffix.lower())
    if kind == "npy":
        try:
            return {None: np.load(path, mmap_mode="r")}, False
        except ValueError as err:
            raise UserError(f"{path} is not a .npy array ({err}); check data.path") from None
    if kind == "npz":
        try:
            with zipfile.ZipFile(path) as z:
                keys = [n[:-4] for n in z.namelist() if n.endswith(".npy")]
        except zipfile.BadZipFile:
            raise UserError(f"{path} is not an .npz archive; check data.path") from None
        return _NpzMembers(path, keys), False
    if kind == "pt":
        import torch

        try:
            obj = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
            raise UserError(f"{path} is not a tensor file torch.load can map ({err}); save it with "
                            f"torch.save(tensor or dict of tensors)") from None
        if isinstance(obj, torch.Tensor):
            return {None: obj}, False
        if isinstance(obj, dict):
            return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}, False
        raise UserError(f"{path} holds a {type(obj).__name__}; save a tensor or a dict of tensors")
    if kind == "zarr":
        try:
            import zarr
        except ImportError:
            raise UserError(f"{path} is a zarr store but zarr is not installed; pip install zarr") from None
        group = zarr.open(str(path), mode="r")
        return ({None: group} if hasattr(group, "shape") else dict(group.arrays())), False
    if kind == "h5" or (kind == "mat" and _is_hdf5(path)):
        f = open_hdf5(path)
        return {**_h5_datasets(f), "__file__": f}, kind == "mat"  # the file itself, to close it
    if kind == "mat":
        from scipy.io import loadmat
        from scipy.io.matlab import MatReadError

        try:  # MATLAB v5/v7 files are small (< 2 GB): loadmat reads them whole
            arrays = loadmat(str(path))
        except (MatReadError, ValueError, TypeError, OSError) as err:
            raise UserError(f"{path} is neither a MATLAB v5 nor a v7.3 (HDF5) file ({err}); "
                            f"check data.path") from None
        return {k: v for k, v in arrays.items() if not k.startswith("__")}, False
    raise UserError(f"{path}: unknown file type {path.suffix!r}; data.format file reads "
                    f"{', '.join(EXTENSIONS)}")


def _is_hdf5(path: Path) -> bool:
    import h5py

    return h5py.is_hdf5(path)


def parse_layout(layout, rank: int, pair: bool, where: str) -> str:
    """Axis letters of an array, e.g. 'NTXY'; None infers it from the rank."""
    if layout is None:
        guess = {(False, 3): "NTX", (False, 4): "NTXY", (True, 2): "NX", (True, 3): "NXY"}.get((pair, rank))
        if guess is None:
            raise UserError(f"{where} has rank {rank}: set data.layout, its axis letters "
                            f"(N sample, T time, C channel, X Y Z space), e.g. 'N T X Y C'")
        return guess
    letters = str(layout).replace(" ", "").upper()
    if set(letters) - set(AXES) or len(set(letters)) != len(letters):
        raise UserError(f"data.layout {layout!r}: use each of the letters N T C X Y Z at most once")
    if len(letters) != rank:
        raise UserError(f"{where} has rank {rank} but data.layout {layout!r} names {len(letters)} axes; "
                        f"give one letter per axis")
    if not set(letters) & set("XYZ"):
        raise UserError(f"data.layout {layout!r} names no spatial axis (X, Y or Z)")
    if pair and "T" in letters:
        raise UserError(f"data.layout {layout!r} has a T axis, but input_key/output_key pairs have none")
    if not pair and "T" not in letters:
        raise UserError(f"data.layout {layout!r} has no T axis; name it, or give input_key/output_key for pairs")
    return letters


class ArraySource(FieldSource):
    """Samples ``index`` of arrays in one file. ``groups`` lists, per frame role, the keys stacked
    as channels: one group (every key of a trajectory) or two (the input and output of pairs)."""

    def __init__(self, info: FieldInfo, path: Path, groups: list[list], layouts: dict, index: np.ndarray):
        super().__init__(info, str(path))
        self.path, self.groups, self.index = path, groups, index
        # the letters in storage order: a MATLAB v7.3 file's HDF5 axes are the layout reversed
        reverse = path.suffix.lower() == ".mat" and _is_hdf5(path)
        self.axes = {k: v[::-1] if reverse else v for k, v in layouts.items()}

    def _open(self):
        return open_arrays(self.path)[0]

    def __len__(self) -> int:
        return len(self.index)

    def where(self, i: int) -> str:
        return f"{self.path}, sample {int(self.index[i])} of the file"

    def _read(self, key, n: int, times: slice | None) -> np.ndarray:
        """One key's sample ``n`` as (T, C, *space) (trajectories) or (C, *space) (pairs)."""
        pick = {"N": n, "T": times}
        axes = self.axes[key]
        out = np.asarray(self.handles()[key][tuple(pick.get(a, slice(None)) for a in axes)])
        kept = [a for a in axes if a != "N"]
        order = [a for a in "TC" + "XYZ" if a in kept]
        out = out.transpose([kept.index(a) for a in order])
        return out if "C" in kept else np.expand_dims(out, order.index("T") + 1 if "T" in kept else 0)

    def _frames(self, i: int, start: int, stop: int) -> np.ndarray:
        n = int(self.index[i])
        if len(self.groups) == 1:
            return np.concatenate([self._read(k, n, slice(start, stop)) for k in self.groups[0]], axis=1)
        return np.stack([np.concatenate([self._read(k, n, None) for k in self.groups[t]], axis=0)
                         for t in range(start, stop)])


def _describe(path: Path, pair: bool, cfg: dict) -> tuple[FieldInfo, list[list], dict, int]:
    """Metadata of one array file: (info, key groups, layout per key, number of samples)."""
    arrays, reverse = open_arrays(path)
    try:
        present = [k for k in arrays if k != "__file__"]
        if pair:
            groups = [[cfg.get("input_key")], [cfg.get("output_key")]]
        else:
            keys = cfg.get("keys")
            keys = [keys] if isinstance(keys, str) else list(keys or [])
            # a bare array needs no key, nor does a file holding a single array
            groups = [keys or ([None] if present == [None] else present if len(present) == 1 else [])]
            if not groups[0]:
                raise UserError(f"{path} holds {', '.join(map(str, present))}: set data.keys to the "
                                f"arrays to read (several are stacked as channels)")
        shapes = {}
        for key in sum(groups, []):
            if key not in present:
                if present == [None]:
                    raise UserError(f"{path} holds one unnamed array, not {key!r}: leave data.keys unset")
                raise UserError(f"{path} has no key {key!r}; keys present: {', '.join(map(str, present))}; "
                                f"set data.{'input_key/output_key' if pair else 'keys'}")
            shape = tuple(arrays[key].shape)
            shapes[key] = shape[::-1] if reverse else shape
        layout = cfg.get("layout")  # one for every key, or {key: layout} where they differ
        layouts = {k: parse_layout(layout.get(k) if isinstance(layout, Mapping) else layout, len(s), pair,
                                   f"{path}: key {k!r} of shape {s}") for k, s in shapes.items()}
        sizes = []
        for key, shape in shapes.items():
            dims = dict(zip(layouts[key], shape))
            sizes.append(tuple(dims.get(a, 1) for a in "NT") + tuple(dims[a] for a in "XYZ" if a in dims))
            if sizes[-1] != sizes[0]:
                raise UserError(f"{path}: keys {list(shapes)} differ in shape "
                                f"({', '.join(map(str, shapes.values()))}); "
                                f"stacked keys need the same samples, frames and grid")
        channels_of = {k: dict(zip(layouts[k], s)).get("C", 1) for k, s in shapes.items()}
    finally:
        getattr(arrays.get("__file__"), "close", lambda: None)()

    def names(key, prefix):
        c = channels_of[key]
        return [prefix] if c == 1 else [f"{prefix}_{j}" for j in range(c)]

    if pair:
        a, b = groups[0][0], groups[1][0]
        if channels_of[a] != channels_of[b]:
            raise UserError(f"{path}: input {a!r} has {channels_of[a]} channels, output {b!r} has "
                            f"{channels_of[b]}; pairs need the same channel count")
        channels = names(a, f"{a}->{b}")
    else:
        channels = sum((names(k, "u" if k is None else str(k)) for k in groups[0]), [])
    n, t, *space = sizes[0]
    info = FieldInfo(kind="pair" if pair else "trajectory", channels=channels, constants=[],
                     space=tuple(space),
                     periodic=per_axis(cfg.get("periodic", True), len(space), "periodic", bool),
                     extent=per_axis(cfg.get("extent"), len(space), "extent"),
                     dt=None if cfg.get("dt") is None else float(cfg["dt"]), n_frames=2 if pair else t)
    return info, groups, layouts, n


def open_file_splits(cfg: dict) -> dict[str, FieldSource]:
    """Splits of ``cfg["path"]``: one file whose samples are split by a draw seeded by
    ``cfg["seed"]`` in the fractions ``cfg["split"]`` (with ``cfg["whole"]`` every split is the
    whole file), or a folder of train/val(valid)/test files."""
    path = Path(str(cfg["path"])).expanduser()
    pair = cfg.get("input_key") is not None or cfg.get("output_key") is not None
    if pair and (cfg.get("input_key") is None or cfg.get("output_key") is None):
        raise UserError("pairs need both data.input_key and data.output_key")
    if path.is_dir() and path.suffix.lower() != ".zarr":
        files = {}
        for split, stems in SPLIT_NAMES.items():
            found = [p for p in sorted(path.iterdir()) if p.stem in stems and p.suffix.lower() in EXTENSIONS]
            if len(found) != 1:
                raise UserError(f"{path} holds {', '.join(p.name for p in sorted(path.iterdir())) or 'nothing'}: "
                                f"expected one {'/'.join(stems)}.<ext> file for split {split}, found {len(found)}")
            files[split] = found[0]
        out = {}
        for split, file in files.items():
            info, groups, layouts, n = _describe(file, pair, cfg)
            out[split] = ArraySource(info, file, groups, layouts, np.arange(n))
        return out
    info, groups, layouts, n = _describe(path, pair, cfg)
    if cfg.get("whole"):  # a file to evaluate on (predict.py data.path=<another file>): all of it, unsplit
        return {split: ArraySource(info, path, groups, layouts, np.arange(n)) for split in SPLIT_NAMES}
    counts = split_counts(n, cfg.get("split") or (0.8, 0.1, 0.1), str(path))
    order = np.random.default_rng(int(cfg.get("seed", 0))).permutation(n)
    bounds = np.cumsum([0] + counts)
    return {split: ArraySource(info, path, groups, layouts, np.sort(order[a:b]))
            for split, a, b in zip(SPLIT_NAMES, bounds[:-1], bounds[1:])}
