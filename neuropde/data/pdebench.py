"""Reader of PDEBench's HDF5 files (Takamoto et al. 2022, arXiv:2210.07182).

Two layouts. A: top-level arrays of shape (N, T, *space): ``tensor`` (one field) or the
compressible-flow fields, stacked in PDEBench's own channel order ``density, pressure, Vx, Vy,
Vz``, with ``x-coordinate`` ... and ``t-coordinate``; the Darcy files (``tensor`` (N, 1, X, Y)
and ``nu`` (N, X, Y)) are input -> output pairs ``nu -> tensor``. B: one group per sample,
``0000/data`` of shape (T, *space, C) with ``0000/grid/{x,y,z,t}``.

The test split is PDEBench's own, so that numbers compare with the published ones: its
single-file loader (layout A) tests on the FIRST ``test_fraction`` of the samples, its
multi-group loader (layout B) on the LAST (groups in sorted order). Validation is the last
``val_fraction`` of the remaining samples.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from neuropde.data.readers import FieldInfo, FieldSource, open_hdf5, per_axis
from neuropde.errors import UserError

CFD_ORDER = ("density", "pressure", "Vx", "Vy", "Vz")
AXES = ("x", "y", "z")


class PdeBenchSource(FieldSource):
    """Samples ``index`` of a PDEBench file. ``keys``: the arrays stacked as channels (layout A),
    or the sample groups (layout B, ``index`` then numbers them)."""

    def __init__(self, info: FieldInfo, path: Path, layout: str, keys: list[str], index: np.ndarray):
        super().__init__(info, str(path))
        self.path, self.layout, self.keys, self.index = path, layout, keys, index

    def _open(self):
        return open_hdf5(self.path)

    def __len__(self) -> int:
        return len(self.index)

    def where(self, i: int) -> str:
        n = int(self.index[i])
        return f"{self.path}, {'group ' + self.keys[n] if self.layout == 'B' else f'sample {n} of the file'}"

    def _frames(self, i: int, start: int, stop: int) -> np.ndarray:
        f, n = self.handles(), int(self.index[i])
        if self.layout == "B":
            return np.moveaxis(f[self.keys[n]]["data"][start:stop], -1, 1)
        if self.info.kind == "pair":  # Darcy: nu (N, X, Y) -> tensor (N, 1, X, Y)
            return np.stack([f["nu"][n][None], f["tensor"][n]])[start:stop]
        return np.stack([f[k][n, start:stop] for k in self.keys], axis=1)


def _describe(f, path: Path) -> tuple:
    """(layout, keys, N, T, space, channel names, coordinates per axis, time coordinates)."""
    groups = sorted(k for k in f if hasattr(f[k], "keys") and "data" in f[k])
    if groups:
        shape = f[groups[0]]["data"].shape  # (T, *space, C)
        grid = f[groups[0]].get("grid", {})
        coords = {a: np.asarray(grid[a][()]) for a in AXES if a in grid}
        channels = ["u"] if shape[-1] == 1 else [f"u_{c}" for c in range(shape[-1])]
        times = np.asarray(grid["t"][()]) if "t" in grid else None
        return "B", groups, len(groups), shape[0], tuple(shape[1:-1]), channels, coords, times
    keys = ["tensor"] if "tensor" in f else [k for k in CFD_ORDER if k in f]
    if not keys:
        raise UserError(f"{path} is not a PDEBench file (no 'tensor', no density/Vx/pressure arrays, no "
                        f"sample groups with 'data'); keys present: {', '.join(f)}; use data.format file")
    shape = f[keys[0]].shape
    if len(shape) < 3:
        raise UserError(f"{path}: {keys[0]!r} has shape {shape}; PDEBench arrays are (N, T, *space)")
    for k in keys:
        if f[k].shape != shape:
            raise UserError(f"{path}: {k!r} has shape {f[k].shape}, {keys[0]!r} {shape}; the fields must match")
    coords = {a: np.asarray(f[f"{a}-coordinate"][()]) for a in AXES if f"{a}-coordinate" in f}
    times = np.asarray(f["t-coordinate"][()]) if "t-coordinate" in f else None
    if "nu" in f and keys == ["tensor"] and shape[1] == 1:
        return "A", keys, shape[0], 2, tuple(shape[2:]), ["nu->tensor"], coords, times
    return "A", keys, shape[0], shape[1], tuple(shape[2:]), keys, coords, times


def _split_index(n: int, layout: str, cfg: dict, path: Path) -> dict[str, np.ndarray]:
    test_fraction, val_fraction = float(cfg.get("test_fraction", 0.1)), float(cfg.get("val_fraction", 0.1))
    n_test = int(n * test_fraction) if layout == "A" else n - int(n * (1 - test_fraction))
    samples = np.arange(n)
    if layout == "A":
        test, rest = samples[:n_test], samples[n_test:]
    else:
        test, rest = samples[n - n_test:], samples[:n - n_test]
    n_val = int(len(rest) * val_fraction)
    out = {"train": rest[:len(rest) - n_val], "val": rest[len(rest) - n_val:], "test": test}
    for name, idx in out.items():
        if len(idx) == 0:
            raise UserError(f"{path} holds {n} samples: too few for test_fraction {test_fraction} and "
                            f"val_fraction {val_fraction} (split {name} would be empty); raise the fraction")
    return out


def open_pdebench_splits(cfg: dict) -> dict[str, FieldSource]:
    """``{"train", "val", "test"}`` sources of one PDEBench HDF5 file at ``cfg["path"]``."""
    path = Path(str(cfg["path"])).expanduser()
    if path.is_dir():
        raise UserError(f"{path} is a folder; data.path of format pdebench is one .hdf5/.h5 file")
    with open_hdf5(path) as f:
        layout, keys, n, t, space, channels, coords, times = _describe(f, path)
    periodic = per_axis(cfg.get("periodic", True), len(space), "periodic", bool)
    # PDEBench grids are cell centres (finite volumes): n spacings span the domain
    extent = [float((c[1] - c[0]) * len(c)) for c in (coords.get(a) for a in AXES[:len(space)])
              if c is not None and len(c) > 1]
    info = FieldInfo(kind="pair" if channels == ["nu->tensor"] else "trajectory", channels=channels,
                     constants=[], space=space, periodic=periodic,
                     extent=extent if len(extent) == len(space) else None,
                     dt=float(times[1] - times[0]) if times is not None and len(times) > 1 else None,
                     n_frames=t)
    return {name: PdeBenchSource(info, path, layout, keys, idx)
            for name, idx in _split_index(n, layout, cfg, path).items()}
