"""Data the user brings (``data=file``, ``data=well``, ``data=pdebench``): their files, read lazily
through :mod:`neuropde.data.readers`, served as the same windows as a generated data set.

Nothing is generated and nothing is loaded whole: a window is read from disk when the loader asks
for it, so a data set larger than memory trains. What the files hold (grid, fields, periodicity,
extent, time step) is read from their metadata by :meth:`FileDataModule.describe` before the model
is built, so that models size themselves from it and a bad file is refused before any work.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from neuropde.data.datamodule import GeneratedDataModule
from neuropde.errors import UserError

log = logging.getLogger(__name__)

PAD_FRACTION = 0.1  # zero-padding of non-periodic axes for Fourier models (FNO's Darcy setting)


class SourceWindows(Dataset):
    """Windows ``frames[s:s+t_in] -> frames[s+t_in:s+t_in+t_out]`` of every sample of a source.

    Items are ``(x, y)``: with a channel axis ``x (t_in, C + K, *space)`` (the K constant fields
    repeated on every input frame) and ``y (t_out, C, *space)``; without one (a single field and
    no constants) ``x (t_in, *space)`` and ``y (t_out, *space)``, as generated data sets.
    """

    def __init__(self, source, t_in: int, t_out: int, stride: int | None, channel_axis: bool):
        n = source.info.n_frames
        if n < t_in + t_out:
            raise UserError(f"the files' trajectories have {n} frames, fewer than data.window.t_in + t_out = "
                            f"{t_in + t_out}: lower data.window.t_in / data.window.t_out")
        self.source, self.t_in, self.t_out, self.channel_axis = source, int(t_in), int(t_out), channel_axis
        starts = range(0, n - t_in - t_out + 1, stride) if stride else [0]
        self.index = [(i, s) for i in range(len(source)) for s in starts]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        i, s = self.index[k]
        frames = np.asarray(self.source.frames(i, s, s + self.t_in + self.t_out), dtype=np.float32)
        x, y = frames[:self.t_in], frames[self.t_in:]
        constants = self.source.constants(i)
        if constants is not None and len(constants):
            x = np.concatenate([x, np.broadcast_to(constants[None], (self.t_in, *constants.shape))], axis=1)
        if not self.channel_axis:
            x, y = x[:, 0], y[:, 0]
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))


class InMemory:
    """A source read whole into memory once (``data.in_memory=true``): fastest when the split fits."""

    def __init__(self, source):
        self.info = source.info
        info = source.info
        # filled in place: a list of samples stacked at the end would need twice the memory
        self.fields = np.empty((len(source), info.n_frames, len(info.channels), *info.space), np.float32)
        for i in range(len(source)):
            self.fields[i] = source.frames(i, 0, info.n_frames)
        consts = [source.constants(i) for i in range(len(source))] if info.constants else None
        self.consts = np.stack(consts) if consts else None
        self.where = source.where  # names the file and index of a sample in messages
        source.close()

    def __len__(self) -> int:
        return len(self.fields)

    def frames(self, i: int, start: int, stop: int) -> np.ndarray:
        return self.fields[i, start:stop]

    def constants(self, i: int):
        return None if self.consts is None else self.consts[i]

    def close(self) -> None:
        pass


class FileDataModule(GeneratedDataModule):
    """Serves the user's files as windows (trajectories) or pairs, read lazily.

    ``stats`` are per-channel means and standard deviations of the training split (inputs: the
    fields and the constant fields; outputs: the fields), shaped ``(C, 1, ..., 1)`` so that they
    broadcast over ``(B, T, C, *space)``; scalars when the data has one field and no constants.
    """

    def __init__(self, data_cfg: dict, root: str | Path, progress: bool = True, seed: int = 0):
        super().__init__(data_cfg, root, progress, seed)
        self.sources: dict | None = None

    @staticmethod
    def describe(data_cfg: dict) -> dict:
        """What the files are, from their metadata only: ``{"resolution", "window" (pairs), "spec"}``
        to merge into the data config before the model is built. Bad files raise a UserError."""
        from neuropde.data.readers import open_splits

        sources = open_splits(data_cfg)
        try:
            return _facts(sources, data_cfg)
        finally:
            for source in sources.values():
                source.close()

    def prepare_data(self) -> None:
        """Nothing to generate: the files are opened (and checked) in :meth:`setup`."""

    def open(self) -> dict:
        from neuropde.data.readers import open_splits

        if self.sources is None:
            self.sources = open_splits(self.cfg)
            if self.cfg.get("in_memory"):
                self.sources = {split: InMemory(source) for split, source in self.sources.items()}
        return self.sources

    def setup(self, stage: str | None = None) -> None:
        from neuropde.data.readers import scan

        if self.stats is not None:  # Lightning calls setup again for fit and test: one pass is enough
            return
        sources = self.open()
        train = sources["train"]
        info = train.info
        moments = scan(train, "train")
        # every split is read once now: a NaN or Inf in val or test is found before training, not after
        for split in ("val", "test"):
            scan(sources[split], split)
        # pairs: input and output frames have their own scales (a coefficient and a solution)
        inp, out = ("in_", "out_") if info.kind == "pair" else ("", "")
        mean = list(moments[f"{inp}mean"]) + list(moments["constants_mean"])
        std = list(moments[f"{inp}std"]) + list(moments["constants_std"])
        self.stats = {"mean": _shaped(mean, info), "std": _shaped(std, info),
                      "out_mean": _shaped(moments[f"{out}mean"], info), "out_std": _shaped(moments[f"{out}std"], info)}

    def load(self, split: str) -> torch.Tensor:
        """A whole split in memory, (N, T, *space), or (N, T, C, *space) with several channels: for
        predictions over whole trajectories (an observer's assimilation); training reads windows."""
        source = self.open()[split]
        fields = torch.from_numpy(np.stack([source.frames(i, 0, source.info.n_frames) for i in range(len(source))]))
        return fields if int(self.cfg["spec"].get("in_channels", 1)) > 1 else fields[:, :, 0]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        w = self.cfg["window"]
        channel_axis = int(self.cfg["spec"].get("in_channels", 1)) > 1
        ds = SourceWindows(self.open()[split], int(w["t_in"]), int(w["t_out"]), self._stride(split), channel_axis)
        return self._batches(ds, shuffle)

    def teardown(self, stage: str | None = None) -> None:
        for source in (self.sources or {}).values():
            source.close()
        self.sources = None


def _shaped(values, info):
    """Per-channel statistics as a nested list (C, 1, ..., 1); a plain float for one channel."""
    values = [float(v) for v in values]
    if len(values) == 1 and not info.constants:
        return values[0]
    return np.asarray(values).reshape(-1, *[1] * len(info.space)).tolist()


def _facts(sources: dict, data_cfg: dict) -> dict:
    """The data config entries that follow from the files (see :meth:`FileDataModule.describe`)."""
    info = sources["train"].info
    for split, source in sources.items():
        other = source.info
        if (other.space, other.channels, other.constants) != (info.space, info.channels, info.constants):
            raise UserError(f"data split {split} holds fields {other.channels} on a {other.space} grid but train "
                            f"holds {info.channels} on {info.space}: every split must have the same fields and grid")
    ndim = len(info.space)
    if ndim not in (1, 2):
        raise UserError(f"the files hold {ndim}-D fields on a {info.space} grid; neuropde's operator families take "
                        "1-D or 2-D fields (check data.layout)")
    periodic = list(info.periodic)
    extent = list(info.extent) if info.extent else [1.0] * ndim
    pair = info.kind == "pair"
    spec = {"kind": f"{'pair' if pair else 'trajectory'}{ndim}d", "ndim": ndim,
            "channels": len(info.channels), "in_channels": len(info.channels) + len(info.constants),
            "channel_names": list(info.channels), "constant_names": list(info.constants),
            "grid": list(info.space), "periodic": periodic, "L": float(extent[0]), "extent": extent,
            # per axis: Fourier models pad only the non-periodic axes
            "fourier_pad_fraction": 0.0 if all(periodic) else [0.0 if p else PAD_FRACTION for p in periodic],
            "persistence": not pair, "dt_snap": float(info.dt) if info.dt else 1.0}
    facts = {"resolution": int(info.space[0]), "spec": spec}
    if pair:
        facts["window"] = {"t_in": 1, "t_out": 1, "stride": None, "eval_stride": None}
    return facts
