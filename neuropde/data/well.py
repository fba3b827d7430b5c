"""Reader of The Well's HDF5 schema (Ohana et al. 2024, arXiv:2412.00568).

A Well data set is ``<path>/data/{train,valid,test}/*.hdf5``; each file holds ``n_trajectories``
trajectories of fields of tensor order 0, 1 and 2 (groups ``t0_fields``, ``t1_fields``,
``t2_fields``). Fields are stacked as channels in the order the_well's ``WellDataset`` uses with
``flatten_tensors=True`` (order by order, field by field, tensor components row-major:
``velocity_x, velocity_y``; ``stress_xx, stress_xy, ...``); time-invariant fields are constants.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neuropde.data.readers import FieldInfo, FieldSource, open_hdf5, per_axis
from neuropde.errors import UserError

SPLIT_DIRS = {"train": ("train",), "val": ("valid", "val"), "test": ("test",)}


@dataclass
class _Field:
    path: str                # dataset inside the file, e.g. "t1_fields/velocity"
    order: int               # tensor order: 0 scalar, 1 vector, 2 matrix
    sample_varying: bool
    time_varying: bool
    dim_varying: list[bool]  # per spatial axis: False when stored once for that whole axis
    names: list[str]         # its channel names


def _attr_bool(ds, name: str, default: bool = True) -> bool:
    return bool(ds.attrs.get(name, default))


def _fields(f, wanted: list[str] | None, where: str) -> list[_Field]:
    dims = [str(d) for d in f["dimensions"].attrs["spatial_dims"]]
    found = []
    for order in range(3):
        group = f.get(f"t{order}_fields")
        if group is None:
            continue
        for name in group.attrs.get("field_names", []):
            ds = group[name]
            suffixes = ["".join(c) for c in itertools.product(dims, repeat=order)]
            found.append(_Field(f"t{order}_fields/{name}", order, _attr_bool(ds, "sample_varying"),
                                _attr_bool(ds, "time_varying"),
                                [bool(v) for v in ds.attrs.get("dim_varying", [True] * len(dims))],
                                [f"{name}_{s}" if s else str(name) for s in suffixes]))
    if wanted is not None:
        present = [fl.path.split("/")[1] for fl in found]
        missing = [w for w in wanted if w not in present]
        if missing:
            raise UserError(f"{where} has no field {', '.join(missing)}; fields present: "
                            f"{', '.join(present)}; set data.fields")
        found = [fl for fl in found if fl.path.split("/")[1] in wanted]
    return found


def _read(f, fl: _Field, traj: int, times: slice | None, space: tuple[int, ...]) -> np.ndarray:
    """One field of trajectory ``traj``: (T, components, *space), or (components, *space) for a
    constant. Axes stored once (dim_varying False) are broadcast over the grid."""
    index = ((traj,) if fl.sample_varying else ()) + ((times,) if fl.time_varying else ())
    a = np.asarray(f[fl.path][index], dtype=np.float32)
    lead = a.shape[:1] if fl.time_varying else ()
    comps = a.shape[a.ndim - fl.order:] if fl.order else ()
    stored = a.shape[len(lead):a.ndim - fl.order]
    if len(stored) != len(space):  # axes that do not vary may be left out rather than kept as size 1
        it = iter(stored)
        stored = tuple(next(it) if used else 1 for used in fl.dim_varying)
    a = np.broadcast_to(a.reshape(lead + stored + comps), lead + space + comps)
    a = a.reshape(lead + space + (int(np.prod(comps)),))
    return np.moveaxis(a, -1, len(lead))


class WellSource(FieldSource):
    """The trajectories of one split, numbered file by file (sorted names), then trajectory by
    trajectory within a file: the order of the_well's ``WellDataset``."""

    def __init__(self, info: FieldInfo, files: list[Path], counts: list[int],
                 fields: list[_Field], constants: list[_Field]):
        super().__init__(info, str(files[0].parent))
        self.files, self.fields, self.const_fields = files, fields, constants
        self.offsets = np.cumsum([0] + counts)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _locate(self, i: int) -> tuple[int, int]:
        k = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return k, i - int(self.offsets[k])

    def where(self, i: int) -> str:
        k, j = self._locate(i)
        return f"{self.files[k]}, trajectory {j}"

    def _open(self) -> dict:
        return {}  # files open on first read: a split may hold hundreds of them

    def _file(self, k: int):
        handles = self.handles()
        if k not in handles:
            handles[k] = open_hdf5(self.files[k])
        return handles[k]

    def _frames(self, i: int, start: int, stop: int) -> np.ndarray:
        k, j = self._locate(i)
        f = self._file(k)
        return np.concatenate([_read(f, fl, j, slice(start, stop), self.info.space) for fl in self.fields], axis=1)

    def constants(self, i: int) -> np.ndarray | None:
        if not self.const_fields:
            return None
        k, j = self._locate(i)
        f = self._file(k)
        return np.ascontiguousarray(np.concatenate(
            [_read(f, fl, j, None, self.info.space) for fl in self.const_fields]), dtype=np.float32)


def _periodic(f, dims: list[str]) -> list[bool]:
    """An axis is periodic when a PERIODIC boundary condition marks its first or last slice:
    the rule of WellDataset's boundary output, so both readers agree."""
    periodic = [False] * len(dims)
    for bc in f.get("boundary_conditions", {}).values():
        if str(bc.attrs.get("bc_type", "")).upper() != "PERIODIC":
            continue
        assoc = [str(d) for d in np.atleast_1d(bc.attrs.get("associated_dims", []))]
        mask = np.asarray(bc["mask"][()]) if "mask" in bc else None
        for axis, d in enumerate(assoc):
            if d in dims and mask is not None and mask.ndim > axis:
                ends = np.take(mask, [0, -1], axis=axis)
                periodic[dims.index(d)] |= bool(ends.any())
    return periodic


def _extent(coords: np.ndarray, periodic: bool) -> float:
    """Side length from grid coordinates: a periodic grid stores one end only (n spacings); a
    bounded one spans first to last point."""
    if len(coords) < 2:
        return 0.0
    return float((coords[1] - coords[0]) * len(coords) if periodic else coords[-1] - coords[0])


def _open_split(directory: Path, cfg: dict, name: str) -> WellSource:
    files = sorted(list(directory.glob("*.h5")) + list(directory.glob("*.hdf5")))
    if not files:
        raise UserError(f"{directory} holds no .h5/.hdf5 files; split {name} of a Well data set is empty")
    counts, steps = [], set()
    for path in files:
        with open_hdf5(path) as f:
            if "dimensions" not in f or "n_trajectories" not in f.attrs:
                raise UserError(f"{path} is not a file of The Well (no 'dimensions' group or "
                                f"'n_trajectories' attribute); use data.format file or pdebench for it")
            counts.append(int(f.attrs["n_trajectories"]))
            steps.add(int(f["dimensions"]["time"].shape[-1]))
    if len(steps) != 1:
        raise UserError(f"{directory}: files hold different numbers of time steps {sorted(steps)}; "
                        f"keep files of one data set together")
    n_steps = steps.pop()
    with open_hdf5(files[0]) as f:
        dims = [str(d) for d in f["dimensions"].attrs["spatial_dims"]]
        space = tuple(int(f["dimensions"][d].shape[-1]) for d in dims)
        fields = _fields(f, cfg.get("fields"), str(files[0]))
        periodic = _periodic(f, dims)
        if cfg.get("periodic") is not None:
            periodic = per_axis(cfg["periodic"], len(dims), "periodic", bool)
        coords = [np.asarray(f["dimensions"][d][()]).reshape(-1, space[a])[0] for a, d in enumerate(dims)]
        time = np.asarray(f["dimensions"]["time"][()]).reshape(-1, n_steps)[0]
    variable = [fl for fl in fields if fl.time_varying]
    constant = [fl for fl in fields if not fl.time_varying]
    if not variable:
        raise UserError(f"{files[0]} has no time-varying field to predict (data.fields {cfg.get('fields')})")
    info = FieldInfo(kind="trajectory", channels=sum((fl.names for fl in variable), []),
                     constants=sum((fl.names for fl in constant), []), space=space, periodic=periodic,
                     extent=[_extent(c, p) for c, p in zip(coords, periodic)],
                     dt=float(time[1] - time[0]) if len(time) > 1 else None, n_frames=n_steps)
    return WellSource(info, files, counts, variable, constant)


def open_well_splits(cfg: dict) -> dict[str, FieldSource]:
    """``{"train", "val", "test"}`` sources of a Well data set at ``cfg["path"]`` (the data-set
    folder holding ``data/``, or ``data/`` itself)."""
    root = Path(str(cfg["path"])).expanduser()
    root = root / "data" if (root / "data").is_dir() else root
    out = {}
    for split, names in SPLIT_DIRS.items():
        found = [root / n for n in names if (root / n).is_dir()]
        if not found:
            raise UserError(f"{root} has no {' or '.join(names)}/ folder; a Well data set is "
                            f"<path>/data/{{train,valid,test}}/*.hdf5 (set data.path to its folder)")
        out[split] = _open_split(found[0], cfg, split)
    return out
