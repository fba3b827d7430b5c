"""Readers of users' data: one lazily read :class:`FieldSource` per split, whatever the file.

Three schemas reach the same interface (``open_splits(data_cfg)``): plain arrays in a file
(``format: file``: .h5/.hdf5, .npz, .npy, .pt, .mat, .zarr; :mod:`neuropde.data.arrays`), The
Well (``format: well``; :mod:`neuropde.data.well`) and PDEBench (``format: pdebench``;
:mod:`neuropde.data.pdebench`).
A source reads windows of frames on demand, never a whole split; it is picklable, and each
process (DataLoader worker) opens its own file handles on first use.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neuropde.errors import UserError

SPLIT_NAMES = {"train": ("train",), "val": ("val", "valid"), "test": ("test",)}


@dataclass
class FieldInfo:
    """What a split holds; the data module sizes models and windows from it."""

    kind: str                   # "trajectory" (n_frames in time) | "pair" (input -> output: 2 frames)
    channels: list[str]         # names of the C field channels
    constants: list[str]        # names of time-independent channels given as extra inputs
    space: tuple[int, ...]      # spatial grid, e.g. (64, 64)
    periodic: list[bool]        # one per spatial axis
    extent: list[float] | None  # physical side length per spatial axis, None when unknown
    dt: float | None            # time between stored frames, None when unknown
    n_frames: int               # frames per trajectory (2 for pairs)


class FieldSource:
    """One split: ``len(source)`` trajectories (or pairs), read window by window.

    Subclasses implement ``_open()`` (the per-process handles), ``__len__`` and ``_frames``; file
    handles never cross a process boundary: they are dropped when pickled and reopened when the
    process id changes (a forked worker must not share the parent's HDF5 handle).
    """

    def __init__(self, info: FieldInfo, name: str):
        self.info, self.name = info, name
        self._handles, self._pid = None, None

    def _open(self):
        raise NotImplementedError

    def _frames(self, i: int, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def handles(self):
        if self._handles is None or self._pid != os.getpid():
            self._handles, self._pid = self._open(), os.getpid()
        return self._handles

    def frames(self, i: int, start: int, stop: int) -> np.ndarray:
        """Frames ``start:stop`` of trajectory (or pair) ``i``: float32 ``(stop - start, C, *space)``."""
        if not 0 <= i < len(self):
            raise IndexError(f"{self.name}: sample {i} out of range (0..{len(self) - 1})")
        if not 0 <= start <= stop <= self.info.n_frames:
            raise IndexError(f"{self.name}: frames {start}:{stop} out of range (0..{self.info.n_frames})")
        return np.ascontiguousarray(self._frames(i, start, stop), dtype=np.float32)

    def constants(self, i: int) -> np.ndarray | None:
        """Constant channels of sample ``i``: float32 ``(len(info.constants), *space)``, or None."""
        return None

    def where(self, i: int) -> str:
        """Where sample ``i`` lives (file and index in it), for error messages."""
        return self.name

    def close(self) -> None:
        """Close this process's file handles (a later read reopens them)."""
        if self._handles is not None and self._pid == os.getpid():
            for h in self._handles.values() if isinstance(self._handles, dict) else [self._handles]:
                getattr(h, "close", lambda: None)()
        self._handles = None

    def __getstate__(self):
        return {**self.__dict__, "_handles": None, "_pid": None}


# ----------------------------------------------------------------------------- small helpers

def per_axis(value, n: int, name: str, kind=float) -> list | None:
    """A config value given once for every spatial axis, or once per axis."""
    if value is None:
        return None
    many = isinstance(value, Sequence) and not isinstance(value, str)  # a list or an OmegaConf ListConfig
    values = list(value) if many else [value] * n
    if len(values) != n:
        raise UserError(f"data.{name} has {len(values)} entries but the data has {n} spatial axes; "
                        f"give one value or {n}")
    return [kind(v) for v in values]


def open_hdf5(path: Path):
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise UserError(f"{path} is not a readable HDF5 file ({err}); check data.path and that the "
                        f"download or copy finished") from None


def check_same_shapes(splits: dict[str, FieldSource]) -> None:
    """Every split must hold the same channels on the same grid (frame counts may differ)."""
    first_name, first = next(iter(splits.items()))
    for name, src in splits.items():
        a, b = first.info, src.info
        if (a.space, a.channels, a.constants) != (b.space, b.channels, b.constants):
            raise UserError(f"splits differ: {first_name} ({first.name}) holds channels {a.channels} + "
                            f"constants {a.constants} on grid {a.space}, {name} ({src.name}) holds "
                            f"{b.channels} + {b.constants} on {b.space}; give files of one data set")
        if len(src) == 0:
            raise UserError(f"split {name} ({src.name}) is empty; add samples or change the split fractions")


def split_counts(n: int, fractions, where: str) -> list[int]:
    """Sizes of train/val/test from fractions of ``n`` (cumulative rounding: they sum to <= n)."""
    fractions = [float(f) for f in fractions]
    if len(fractions) != 3 or min(fractions) < 0 or sum(fractions) > 1 + 1e-9:
        raise UserError(f"data.split {fractions} must be three fractions (train, val, test) summing to at most 1")
    bounds = np.round(np.cumsum([0.0] + fractions) * n).astype(int)
    counts = [int(b - a) for a, b in zip(bounds[:-1], bounds[1:])]
    for name, c in zip(SPLIT_NAMES, counts):
        if c == 0:
            raise UserError(f"{where} holds {n} samples: too few for data.split {fractions} "
                            f"(split {name} would be empty); add samples or raise its fraction")
    return counts


# ----------------------------------------------------------------------------- public entry points

def open_splits(data_cfg: dict) -> dict[str, FieldSource]:
    """Open the train/val/test splits a data config names, reading metadata only.

    Parameters
    ----------
    data_cfg : plain dict with ``format`` ("file" | "well" | "pdebench"), ``path`` and the
        format's options (see ``conf/data/{file,well,pdebench}.yaml``).

    Returns
    -------
    ``{"train": FieldSource, "val": FieldSource, "test": FieldSource}``; each source's
    ``frames(i, start, stop)`` is float32 ``(stop - start, C, *space)``.

    Raises
    ------
    UserError : one line naming the file and the fix, for any input that cannot be read.
    """
    fmt = data_cfg.get("format", "file")
    if data_cfg.get("path") is None:
        raise UserError(f"data.path is not set; give the {fmt} data to read")
    path = Path(str(data_cfg["path"])).expanduser()
    if not path.exists():
        raise UserError(f"data.path {path} does not exist; give the path of the data "
                        f"(relative paths are taken from {Path.cwd()})")
    if fmt == "file":
        from neuropde.data.arrays import open_file_splits

        splits = open_file_splits(data_cfg)
    elif fmt == "well":
        from neuropde.data.well import open_well_splits

        splits = open_well_splits(data_cfg)
    elif fmt == "pdebench":
        from neuropde.data.pdebench import open_pdebench_splits

        splits = open_pdebench_splits(data_cfg)
    else:
        raise UserError(f"data.format {fmt!r} is unknown; use file, well or pdebench")
    check_same_shapes(splits)
    return splits


class _Moments:
    """Per-channel running mean and variance, merged chunk by chunk (Chan et al.): no
    cancellation from summing squares of large values."""

    def __init__(self, channels: int):
        self.n, self.mean, self.m2 = 0, np.zeros(channels), np.zeros(channels)

    def add(self, x: np.ndarray) -> None:  # x: (C, points)
        nb, mb = x.shape[1], x.mean(axis=1)
        delta, total = mb - self.mean, self.n + nb
        self.m2 += ((x - mb[:, None]) ** 2).sum(axis=1) + delta ** 2 * self.n * nb / total
        self.mean += delta * nb / total
        self.n = total

    def result(self) -> tuple[list[float], list[float]]:
        return self.mean.tolist(), np.sqrt(self.m2 / max(self.n, 1)).tolist()


def _check_finite(block: np.ndarray, split: str, src: FieldSource, i: int, what: str, names, first: int):
    bad = ~np.isfinite(block)
    if bad.any():
        hit = np.argwhere(bad)[0]
        at = f"frame {first + int(hit[0])}, channel {names[int(hit[1])]!r}" if what == "fields" \
            else f"constant {names[int(hit[0])]!r}"
        raise UserError(f"{split} sample {i}, {at} holds NaN/Inf ({src.where(i)}); remove or repair "
                        f"that sample before training")


def scan(source: FieldSource, split: str, chunk_frames: int = 16) -> dict:
    """One streaming pass over a split: per-channel statistics, and a check for NaN/Inf.

    Parameters
    ----------
    source : the split.
    split : its name, for messages.
    chunk_frames : frames read at once (memory: chunk_frames * C * prod(space) floats).

    Returns
    -------
    dict with ``mean``, ``std`` (lists of length C, over every sample, frame and point),
    ``constants_mean``, ``constants_std`` (length ``len(info.constants)``, [] when none), and for
    pairs ``in_mean``, ``in_std``, ``out_mean``, ``out_std`` (input and output frames separately:
    a coefficient and a solution rarely share a scale).

    Raises
    ------
    UserError : a NaN or Inf, naming the split, the sample, the frame and the file.
    """
    from tqdm.auto import tqdm

    info = source.info
    c = len(info.channels)
    fields, consts = _Moments(c), _Moments(len(info.constants))
    per_frame = [_Moments(c), _Moments(c)] if info.kind == "pair" else []
    size = len(source) * info.n_frames * c * int(np.prod(info.space))
    for i in tqdm(range(len(source)), desc=f"scan {split}", unit="sample", disable=size < 1 << 26):
        for start in range(0, info.n_frames, chunk_frames):
            block = source.frames(i, start, min(start + chunk_frames, info.n_frames)).astype(np.float64)
            _check_finite(block, split, source, i, "fields", info.channels, start)
            flat = block.reshape(len(block), c, -1)
            fields.add(flat.transpose(1, 0, 2).reshape(c, -1))
            for t, frame in enumerate(flat if per_frame else []):
                per_frame[start + t].add(frame)
        if info.constants:
            const = source.constants(i).astype(np.float64)
            _check_finite(const, split, source, i, "constants", info.constants, 0)
            consts.add(const.reshape(len(info.constants), -1))
    mean, std = fields.result()
    out = {"mean": mean, "std": std, "constants_mean": [], "constants_std": []}
    if info.constants:
        out["constants_mean"], out["constants_std"] = consts.result()
    if per_frame:
        (out["in_mean"], out["in_std"]), (out["out_mean"], out["out_std"]) = (m.result() for m in per_frame)
    return out
