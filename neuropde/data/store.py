"""HDF5 data store: atomic, resumable, manifest-checked data sets on disk.

Layout of one data set (``root/<dir>/``)::

    manifest.json          generator config, per-file sha256, package version
    train.h5 val.h5 test.h5
        fields  (samples, time, *space) float32      trajectory data sets
        times   (time,)
        -- or, for generators that return named arrays (FE snapshots: ``E_bar``, ``sigma``, …) --
        <name>  (samples, ...) in the generator's dtype (float64 stays float64)
        attrs   every generator parameter
    .shards_<split>/       only while a split is being generated (resumable)

A split is generated in shards of samples; each finished shard is saved atomically, so an
interrupted generation resumes where it stopped and never leaves a file that reads as complete:
``<split>.h5`` appears (by rename) only once every shard is done and its checksum is recorded.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def config_hash(config: dict) -> str:
    """Stable short hash of a JSON-serialisable config."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_sha256(path: Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def _save_npz_atomic(path: Path, arrays: dict) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


class DataStore:
    """One generated data set in ``directory`` described by ``config`` (a plain dict).

    Parameters
    ----------
    directory : folder of the data set.
    config : every generator parameter; its hash decides whether files on disk can be reused.
    """

    def __init__(self, directory: str | Path, config: dict):
        self.dir = Path(directory)
        self.config = config
        self.hash = config_hash(config)

    @property
    def manifest_path(self) -> Path:
        return self.dir / "manifest.json"

    def path(self, split: str) -> Path:
        return self.dir / f"{split}.h5"

    def manifest(self) -> dict | None:
        try:
            return json.loads(self.manifest_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def is_complete(self, split: str, verify: bool = True) -> bool:
        """True when ``split`` exists, was made from this config and matches its checksum."""
        man = self.manifest()
        if man is None or man.get("config_hash") != self.hash:
            return False
        entry = man.get("files", {}).get(split)
        path = self.path(split)
        if entry is None or not path.exists():
            return False
        if path.stat().st_size != entry["bytes"]:
            return False
        return not verify or file_sha256(path) == entry["sha256"]

    def _reset_if_stale(self) -> None:
        """Drop files made from another config so they are never silently reused."""
        man = self.manifest()
        if man is not None and man.get("config_hash") != self.hash:
            log.warning("data set %s was generated with another config: regenerating", self.dir)
            for split in SPLITS:
                self.path(split).unlink(missing_ok=True)
            self.manifest_path.unlink(missing_ok=True)
        for shard_dir in self.dir.glob(".shards_*"):
            stamp = shard_dir / "config_hash"
            if not stamp.exists() or stamp.read_text() != self.hash:
                shutil.rmtree(shard_dir, ignore_errors=True)

    def write_split(
        self,
        split: str,
        n_samples: int,
        shard_size: int,
        make_shard: Callable[[int, int], tuple[np.ndarray, np.ndarray] | dict[str, np.ndarray]],
        attrs: dict,
        progress: bool = True,
    ) -> Path:
        """Generate ``split`` shard by shard, then assemble ``<split>.h5`` atomically.

        ``make_shard(start, stop)`` returns either ``(fields (stop-start, time, *space), times (time,))``
        (trajectories, stored as float32 ``fields`` and ``times``) or a dict of named arrays, each
        ``(stop-start, ...)``, stored under their names in their own dtype. Each sample must depend
        only on its own index. A ``make_shard`` that takes a ``progress`` keyword is handed a
        callable ``progress(fraction)`` to report how much of its shard is done, so that the bar
        moves (and shows a rate and an ETA) while a long shard is being solved.
        """
        import inspect

        from tqdm.auto import tqdm

        self.dir.mkdir(parents=True, exist_ok=True)
        self._reset_if_stale()
        shard_dir = self.dir / f".shards_{split}"
        shard_dir.mkdir(exist_ok=True)
        (shard_dir / "config_hash").write_text(self.hash)
        starts = list(range(0, n_samples, shard_size))
        reports_progress = "progress" in inspect.signature(make_shard).parameters

        def shard_file(start: int) -> Path | None:
            found = [p for p in (shard_dir / f"{start:08d}.npy", shard_dir / f"{start:08d}.npz") if p.exists()]
            return found[0] if found else None

        done = sum(shard_file(s) is not None for s in starts)
        if done:
            log.info("resuming %s/%s: %d of %d shards already done", self.dir, split, done, len(starts))
        # whole samples shown; the count moves in fractions while a shard reports its progress
        bar = tqdm(total=n_samples, desc=f"generate {self.dir.name}/{split}", unit="sample",
                   disable=not progress, initial=min(done * shard_size, n_samples),
                   bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]")
        for start in starts:
            stop = min(start + shard_size, n_samples)
            if shard_file(start) is None:
                reported = 0.0

                def advance(fraction: float) -> None:
                    nonlocal reported
                    now = min(max(fraction, 0.0), 1.0) * (stop - start)
                    if now > reported:
                        bar.update(now - reported)
                        reported = now

                out = make_shard(start, stop, progress=advance) if reports_progress else make_shard(start, stop)
                if isinstance(out, dict):
                    _save_npz_atomic(shard_dir / f"{start:08d}.npz", {k: np.asarray(v) for k, v in out.items()})
                else:
                    fields, times = out
                    _save_npy_atomic(shard_dir / f"{start:08d}.npy", np.asarray(fields, dtype=np.float32))
                    _save_npy_atomic(shard_dir / "times.npy", np.asarray(times))
                bar.update(stop - start - reported)
        bar.close()

        tmp = self.path(split).with_suffix(".h5.tmp")
        with h5py.File(tmp, "w") as f:
            if shard_file(starts[0]).suffix == ".npz":
                with np.load(shard_file(starts[0])) as first:
                    for key in first.files:
                        f.create_dataset(key, shape=(n_samples,) + first[key].shape[1:], dtype=first[key].dtype)
                for start in starts:
                    with np.load(shard_file(start)) as block:
                        for key in block.files:
                            f[key][start:start + len(block[key])] = block[key]
            else:
                first = np.load(shard_file(starts[0]), mmap_mode="r")
                dset = f.create_dataset("fields", shape=(n_samples,) + first.shape[1:], dtype="float32",
                                        chunks=(1,) + first.shape[1:])
                for start in starts:
                    block = np.load(shard_file(start))
                    dset[start:start + len(block)] = block
                f.create_dataset("times", data=np.load(shard_dir / "times.npy"))
            for key, value in _flatten(attrs).items():
                f.attrs[key] = value
            f.attrs["split"] = split
            f.attrs["config_hash"] = self.hash
        os.replace(tmp, self.path(split))

        man = self.manifest() if (self.manifest() or {}).get("config_hash") == self.hash else None
        man = man or {"config_hash": self.hash, "config": self.config, "files": {}}
        from neuropde import __version__

        man["version"] = __version__
        man["files"][split] = {"sha256": file_sha256(self.path(split)),
                               "bytes": self.path(split).stat().st_size,
                               "samples": n_samples}
        atomic_write_json(self.manifest_path, man)
        shutil.rmtree(shard_dir, ignore_errors=True)
        log.info("wrote %s (%d samples)", self.path(split), n_samples)
        return self.path(split)

    def read(self, split: str) -> tuple[np.ndarray, np.ndarray, dict]:
        """Return ``(fields, times, attrs)`` of a complete split."""
        try:
            with h5py.File(self.path(split), "r") as f:
                return f["fields"][...], f["times"][...], dict(f.attrs)
        except OSError as err:
            raise RuntimeError(f"cannot read {self.path(split)} ({err}); delete it to regenerate") from err

    def read_arrays(self, split: str) -> dict[str, np.ndarray]:
        """Every named array of a complete split (data sets whose generator returns a dict)."""
        try:
            with h5py.File(self.path(split), "r") as f:
                return {k: f[k][...] for k in f.keys()}
        except OSError as err:
            raise RuntimeError(f"cannot read {self.path(split)} ({err}); delete it to regenerate") from err


def _flatten(d: dict, prefix: str = "") -> dict:
    """HDF5 attributes are flat: nested keys become ``a.b``; None becomes the string 'none'."""
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        elif value is None:
            out[name] = "none"
        elif isinstance(value, (list, tuple)):
            array = np.asarray(value)  # h5py stores strings only as its own variable-length type
            out[name] = array.astype(h5py.string_dtype()) if array.dtype.kind == "U" else array
        else:
            out[name] = value
    return out
