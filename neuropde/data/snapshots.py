"""Snapshots of stored trajectories for models that own one latent per (trajectory, time): auto-decoders
such as Φ-ROM (``model=phirom``).

Training serves single frames with their indices, from the first ``train_frames`` frames of every
training trajectory (the training horizon); validation and test serve whole trajectories, so a
model can be judged inside and beyond that horizon.
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from neuropde.data.datamodule import EpochShuffle, TrajectoryDataModule
from neuropde.data.generators import ensure_generated
from neuropde.errors import UserError


class IndexedSnapshots(Dataset):
    """Item k -> (trajectory index i, frame j, field (n,) or (n, n)) for every i and every j < ``frames``."""

    def __init__(self, fields: torch.Tensor, frames: int):
        if not 1 <= frames <= fields.shape[1]:
            raise UserError(f"model.task.train_frames={frames} but the trajectories have {fields.shape[1]} frames: "
                            f"choose 1..{fields.shape[1]}")
        self.fields, self.frames = fields, int(frames)

    def __len__(self) -> int:
        return self.fields.shape[0] * self.frames

    def __getitem__(self, k: int):
        i, j = divmod(k, self.frames)
        return i, j, self.fields[i, j]


class IndexedTrajectories(Dataset):
    """Item i -> (i, whole trajectory (T, n) or (T, n, n), PDE parameters (p,); p = 0 for a non-parametric set)."""

    def __init__(self, fields: torch.Tensor, params: torch.Tensor):
        self.fields, self.params = fields, params

    def __len__(self) -> int:
        return self.fields.shape[0]

    def __getitem__(self, i: int):
        return i, self.fields[i], self.params[i]


class RepeatedShuffle(EpochShuffle):
    """``repeats`` independent shuffles of n items per epoch: an auto-decoder updates each latent
    only when its snapshot is drawn, so short epochs would leave the latents nearly untrained."""

    def __init__(self, n: int, seed: int = 0, repeats: int = 1):
        super().__init__(n, seed)
        self.repeats = max(int(repeats), 1)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.cat([torch.randperm(self.n, generator=g) for _ in range(self.repeats)]).tolist())

    def __len__(self) -> int:
        return self.n * self.repeats


class SnapshotDataModule(TrajectoryDataModule):
    """A trajectory data set served as indexed snapshots (train) and whole trajectories (val/test).

    ``train_frames`` is the training horizon in frames; ``data.loader``: ``eval_batch_size``
    trajectories per evaluation batch (default 16), ``epoch_repeats`` passes over the training
    snapshots per epoch (default 1). A parametric set (one viscosity ``nu`` stored per trajectory)
    also gives each trajectory's parameters: ``stats["params"]`` (train) and the third item of
    evaluation batches.
    """

    def __init__(self, data_cfg: dict, root, train_frames: int, progress: bool = True, seed: int = 0):
        super().__init__(data_cfg, root, progress=progress, seed=seed)
        self.train_frames = int(train_frames)
        self.params: dict[str, torch.Tensor] = {}

    def load(self, split: str) -> torch.Tensor:
        """Fields (samples, T, n) or (samples, T, n, n) of a split; its parameters (samples, p) go to
        ``self.params``."""
        if split not in self.splits:
            arrays = ensure_generated(self.cfg, self.root, splits=[split], progress=self.progress).read_arrays(split)
            fields = torch.from_numpy(arrays["fields"])
            self.splits[split] = fields
            self.params[split] = (torch.from_numpy(arrays["nu"]).float()[:, None] if "nu" in arrays
                                  else torch.zeros(len(fields), 0))
        return self.splits[split]

    def setup(self, stage: str | None = None) -> None:
        train = self.load("train")[:, :self.train_frames]  # statistics of what training sees
        self.stats = {"mean": float(train.mean()), "std": float(train.std())}
        if self.params["train"].shape[1]:
            self.stats["params"] = self.params["train"].tolist()  # (N_traj, p): the task's Ψ(α, μ) and solver

    def train_dataloader(self) -> DataLoader:
        ds = IndexedSnapshots(self.load("train"), self.train_frames)
        ld = self.cfg["loader"]
        return DataLoader(ds, batch_size=int(ld["batch_size"]),
                          sampler=RepeatedShuffle(len(ds), self.seed, int(ld.get("epoch_repeats", 1))),
                          num_workers=int(ld.get("num_workers", 0)))

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        """Whole trajectories, in stored order, for evaluation (training serves snapshots)."""
        fields = self.load(split)
        return DataLoader(IndexedTrajectories(fields, self.params[split]), shuffle=False,
                          batch_size=int(self.cfg["loader"].get("eval_batch_size", 16)))
