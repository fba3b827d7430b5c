"""Write a generated neuropde data set in another project's schema: The Well or PDEBench.

``python generate.py data=ns2d export=well`` (or ``export=pdebench``) reads the store
(:mod:`neuropde.data.store`: ``<dir>/{train,val,test}.h5``, ``fields`` (N, T, *space) float32,
``times`` (T,)) one trajectory at a time and writes

- The Well (PolymathicAI/the_well, ``the_well.data.WellDataset(path=out, well_split_name=...)``):
  ``<out>/data/{train,valid,test}/<name>.hdf5`` with the field as one t0 field, its time and space
  coordinates, periodic boundary conditions, the physical parameters as constant scalars, and
  ``<out>/stats.yaml`` (the training split's mean/std/rms and those of one-step differences);
- PDEBench: one ``<name>.hdf5`` holding every split.

Both schemas take trajectory data sets; PDEBench takes pairs too (its Darcy layout).
Every file is written under a temporary name and renamed when complete.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import yaml

from neuropde.data.store import SPLITS
from neuropde.errors import UserError

WELL_SPLITS = {"train": "train", "val": "valid", "test": "test"}
FIELD_NAMES = {"navier_stokes": "vorticity", "navier_stokes_forcing": "vorticity"}  # else "u"
PARAMETERS = ("L", "nu", "delta")  # generator values written as scalars where a data set has them
AXES = "xyz"


def field_name(data_cfg: dict) -> str:
    """Name of the stored field: ``vorticity`` for Navier–Stokes, ``u`` otherwise."""
    return FIELD_NAMES.get(data_cfg["equation"], "u")


def grid(data_cfg: dict, n: int) -> np.ndarray:
    """Coordinates (n,) of one spatial axis: ``i L / n`` on a periodic [0, L), else ``linspace(0, L, n)``
    (nodes on the boundary, as the Darcy solver stores them)."""
    L = float(data_cfg["spec"].get("L", 1.0))
    return np.arange(n) * (L / n) if periodic(data_cfg) else np.linspace(0.0, L, n)


def periodic(data_cfg: dict) -> bool:
    """Every generated set is periodic except those that pad for their Fourier layers (darcy)."""
    spec = data_cfg["spec"]
    return bool(spec.get("periodic", "fourier_pad_fraction" not in spec))


def _is_pair(data_cfg: dict) -> bool:
    return str(data_cfg["spec"]["kind"]).startswith("pair")


def _check_kind(data_cfg: dict, schema: str) -> None:
    kind = str(data_cfg["spec"]["kind"])
    if kind.startswith("trajectory") or (schema == "pdebench" and kind.startswith("pair")):
        return
    takes = "trajectory data sets" + (" and pairs" if schema == "pdebench" else "")
    hint = ("export=pdebench writes pairs (PDEBench's Darcy layout)" if kind.startswith("pair")
            else "choose a trajectory data set (ns2d, ks, kdv, burgers, ...)")
    raise UserError(f"export={schema} takes {takes}; data={data_cfg['name']} is {kind}: {hint}")


def exporter(schema: str, data_cfg: dict) -> Callable[[Path, dict, Path], Path]:
    """The export function of ``schema`` (``well`` | ``pdebench``) after checking that it takes
    ``data_cfg``'s kind of data set, so that a bad request fails before anything is generated."""
    if schema not in EXPORTERS:
        raise UserError(f"export={schema} is not an option; choose one of {', '.join(EXPORTERS)} (or null)")
    _check_kind(data_cfg, schema)
    return EXPORTERS[schema]


def _split_files(store_dir: Path) -> dict[str, Path]:
    files = {s: Path(store_dir) / f"{s}.h5" for s in SPLITS}
    for path in files.values():
        if not path.exists():
            raise UserError(f"{path} is missing: generate every split first (python generate.py data=...)")
    return files


def _times(src: h5py.File) -> np.ndarray:
    """Frame times (T,); a set that stores them per sample (N, T) must have the same row everywhere."""
    times = src["times"][...]
    if times.ndim == 2:
        if not np.allclose(times, times[:1]):
            raise UserError(f"{src.filename}: the samples have different frame times; neither schema "
                            f"export takes that")
        times = times[0]
    return times


def _parameters(data_cfg: dict, src: h5py.File) -> dict[str, float | np.ndarray]:
    """Physical parameters: the generator's constants, and per-sample values (N,) the store holds."""
    g = data_cfg.get("generator", {})
    params = {k: float(g[k]) for k in PARAMETERS
              if isinstance(g.get(k), (int, float)) and not isinstance(g.get(k), bool)}
    n = len(src["fields"])
    params.update({k: src[k][...] for k in src if k not in ("fields", "times") and src[k].shape == (n,)})
    return params


@contextlib.contextmanager
def _atomic_h5(path: Path):
    """An ``h5py.File`` written under a temporary name, renamed to ``path`` when the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with h5py.File(tmp, "w") as f:
            yield f
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class _Moments:
    """Running sums of x, x² and of the one-step differences x[t+1] − x[t] (float64)."""

    def __init__(self):
        self.sums = np.zeros((2, 3))  # rows: fields, deltas; columns: count, sum, sum of squares

    def add(self, trajectory: np.ndarray) -> None:
        for row, x in enumerate((trajectory, np.diff(trajectory, axis=0))):
            x = x.astype(np.float64)
            self.sums[row] += (x.size, x.sum(), np.square(x).sum())

    def stats(self, name: str) -> dict:
        out = {}
        for row, suffix in ((0, ""), (1, "_delta")):
            n, s, s2 = self.sums[row]
            mean = s / n
            out[f"mean{suffix}"] = {name: float(mean)}
            out[f"std{suffix}"] = {name: float(np.sqrt(max(s2 / n - mean**2, 0.0)))}
            out[f"rms{suffix}"] = {name: float(np.sqrt(s2 / n))}
        return out


def _copy(src: h5py.Dataset, dst: h5py.Dataset, offset: int = 0, index=(), moments: _Moments | None = None):
    """``dst[offset + i] = src[i][index]`` one sample at a time (bounded memory)."""
    for i in range(len(src)):
        block = src[i]
        dst[offset + i] = block[index]
        if moments is not None:
            moments.add(block)


def _names(names) -> np.ndarray:
    return np.array(list(names), dtype=h5py.string_dtype())


def export_well(store_dir: Path, data_cfg: dict, out: Path) -> Path:
    """Write a generated trajectory data set as a data set of The Well.

    Parameters
    ----------
    store_dir : the store's folder, holding ``{train,val,test}.h5`` with ``fields`` (N, T, *space).
    data_cfg : the resolved data config (``name``, ``equation``, ``generator``, ``spec``).
    out : the Well data set's folder.

    Returns
    -------
    ``out``, holding ``data/{train,valid,test}/<name>.hdf5`` and ``stats.yaml``: read it with
    ``WellDataset(path=out, well_split_name="train")``. Each file has the field as the t0 field
    ``vorticity`` (Navier–Stokes) or ``u`` (N, T, *space) float32; ``dimensions`` ``time`` (T,) and
    ``x``, ``y`` (the grid of :func:`grid`); a ``PERIODIC`` boundary condition per axis of a periodic
    set; the physical parameters (:data:`PARAMETERS`, and per-sample values such as Burgers' ``nu``
    (N,)) as constant scalars and file attributes; the store's attributes as ``neuropde.<key>``.
    ``stats.yaml`` holds the training split's mean, std and rms, and those of one-step differences.
    """
    _check_kind(data_cfg, "well")
    out, name = Path(out), field_name(data_cfg)
    moments = _Moments()
    for split, path in _split_files(store_dir).items():
        with h5py.File(path, "r") as src, _atomic_h5(out / "data" / WELL_SPLITS[split] / f"{data_cfg['name']}.hdf5") as f:
            fields = src["fields"]
            space = fields.shape[2:]
            axes = list(AXES[:len(space)])
            params = _parameters(data_cfg, src)
            f.attrs.update({"dataset_name": data_cfg["name"], "grid_type": "cartesian",
                            "n_spatial_dims": len(space), "n_trajectories": len(fields),
                            "simulation_parameters": _names(params)})
            f.attrs.update({k: v for k, v in params.items() if np.ndim(v) == 0})
            f.attrs.update({f"neuropde.{k}": v for k, v in src.attrs.items()})

            dims = f.create_group("dimensions")
            dims.attrs["spatial_dims"] = _names(axes)
            for axis, values in zip(["time", *axes], [_times(src), *(grid(data_cfg, n) for n in space)]):
                dims.create_dataset(axis, data=values).attrs["sample_varying"] = False

            bcs = f.create_group("boundary_conditions")
            for axis, n in zip(axes, space) if periodic(data_cfg) else ():
                mask = np.zeros(n, dtype=bool)
                mask[[0, -1]] = True  # the_well reads a boundary's type where its mask is set
                bc = bcs.create_group(f"{axis}_periodic")
                bc.attrs.update({"associated_dims": _names([axis]), "associated_fields": _names([]),
                                 "bc_type": "PERIODIC", "sample_varying": False, "time_varying": False})
                bc.create_dataset("mask", data=mask)

            scalars = f.create_group("scalars")
            scalars.attrs["field_names"] = _names(params)
            for key, value in params.items():
                dset = scalars.create_dataset(key, data=np.asarray(value))
                dset.attrs.update({"time_varying": False, "sample_varying": np.ndim(value) == 1})

            for order in range(3):
                f.create_group(f"t{order}_fields").attrs["field_names"] = _names([name] if order == 0 else [])
            dset = f["t0_fields"].create_dataset(name, shape=fields.shape, dtype="float32",
                                                 chunks=(1, *fields.shape[1:]))
            dset.attrs.update({"dim_varying": [True] * len(space), "sample_varying": True, "time_varying": True})
            _copy(fields, dset, moments=moments if split == "train" else None)
    stats = out / "stats.yaml"
    stats.with_name("stats.yaml.tmp").write_text(yaml.safe_dump(moments.stats(name)))
    os.replace(stats.with_name("stats.yaml.tmp"), stats)
    return out


def export_pdebench(store_dir: Path, data_cfg: dict, out: Path) -> Path:
    """Write a generated data set as one PDEBench HDF5 file (PDEBench's layout of scalar equations).

    Parameters
    ----------
    store_dir : the store's folder, holding ``{train,val,test}.h5`` with ``fields`` (N, T, *space).
    data_cfg : the resolved data config (``name``, ``equation``, ``generator``, ``spec``).
    out : a folder (the file is ``<out>/<name>.hdf5``) or a file name ending in .hdf5 or .h5.

    Returns
    -------
    The file. It holds ``tensor`` (N, T, *space) float32, ``x-coordinate`` (X,) [``y-coordinate``
    (Y,), ``z-coordinate``], ``t-coordinate`` (T,) (one time per frame), the physical parameters as attributes (per-sample ones as arrays (N,)) and the
    store's attributes as ``neuropde.<key>``. A pair data set (darcy) is written as PDEBench writes
    Darcy flow: ``nu`` (N, *space) the input field and ``tensor`` (N, 1, *space) the output.

    The samples are test, train, val in this order (attributes ``neuropde.rows.<split>`` =
    [start, stop]): PDEBench's own loaders (``pdebench/models/*/utils.py``) and ``data=pdebench``
    test on the *first* ``int(0.1 N)`` rows of such a file, which are then our test samples when
    the test split is 10 % of the set (``ns2d_small``: 16 of 160), and ``data=pdebench`` validates
    on the last ``val_fraction`` of the rest, where our val samples lie.
    """
    _check_kind(data_cfg, "pdebench")
    out = Path(out)
    path = out if out.suffix in (".hdf5", ".h5") else out / f"{data_cfg['name']}.hdf5"
    files = _split_files(store_dir)
    files = {s: files[s] for s in ("test", "train", "val")}  # PDEBench's test rows come first
    with contextlib.ExitStack() as stack:
        srcs = {s: stack.enter_context(h5py.File(p, "r")) for s, p in files.items()}
        f = stack.enter_context(_atomic_h5(path))
        first = srcs["train"]
        n = {s: len(src["fields"]) for s, src in srcs.items()}
        shape = first["fields"].shape[1:]  # (T, *space)
        space = shape[1:]
        if _is_pair(data_cfg):  # frames [input, output]
            tensor = f.create_dataset("tensor", shape=(sum(n.values()), 1, *space), dtype="float32")
            inputs = f.create_dataset("nu", shape=(sum(n.values()), *space), dtype="float32")
        else:
            tensor = f.create_dataset("tensor", shape=(sum(n.values()), *shape), dtype="float32",
                                      chunks=(1, *shape))
        start = 0
        for split, src in srcs.items():
            if src["fields"].shape[1:] != shape:
                raise UserError(f"{files[split]}: fields {src['fields'].shape[1:]} per sample, train has "
                                f"{shape}; regenerate the data set")
            if _is_pair(data_cfg):
                _copy(src["fields"], tensor, start, index=slice(1, 2))
                _copy(src["fields"], inputs, start, index=0)
            else:
                _copy(src["fields"], tensor, start)
            f.attrs[f"neuropde.rows.{split}"] = [start, start + n[split]]
            start += n[split]
        for axis, size in zip(AXES, space):
            f.create_dataset(f"{axis}-coordinate", data=grid(data_cfg, size).astype(np.float32))
        f.create_dataset("t-coordinate", data=_times(first).astype(np.float32))
        params = {k: np.concatenate([_parameters(data_cfg, src)[k] for src in srcs.values()])
                  if np.ndim(v) == 1 else v for k, v in _parameters(data_cfg, first).items()}
        f.attrs.update({k: v for k, v in params.items() if np.ndim(v) == 0})
        for key, value in params.items():
            if np.ndim(value) == 1:
                f.create_dataset(key, data=value)
        f.attrs.update({f"neuropde.{k}": v for k, v in first.attrs.items() if k != "split"})
    return path


EXPORTERS = {"well": export_well, "pdebench": export_pdebench}
