"""Lightning data modules: the base every generated data set shares, and trajectory data served as
windows of T_in frames -> T_out frames."""
from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from neuropde.data.generators import ensure_generated

log = logging.getLogger(__name__)


class TrajectoryWindows(Dataset):
    """All windows ``fields[i, s:s+t_in] -> fields[i, s+t_in:s+t_in+t_out]`` of a split.

    Parameters
    ----------
    fields : Tensor (samples, time, *space)
    t_in, t_out : window lengths in frames.
    stride : distance between window starts; ``None`` keeps only the first window per sample.
    """

    def __init__(self, fields: torch.Tensor, t_in: int, t_out: int, stride: int | None = 1):
        if fields.shape[1] < t_in + t_out:
            raise ValueError(f"trajectories have {fields.shape[1]} frames, fewer than t_in + t_out = "
                             f"{t_in + t_out}; lower data.window.t_in/t_out or raise data.generator.n_frames")
        self.fields, self.t_in, self.t_out = fields, t_in, t_out
        last = fields.shape[1] - t_in - t_out
        starts = range(0, last + 1, stride) if stride else [0]
        self.index = [(i, s) for i in range(fields.shape[0]) for s in starts]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        i, s = self.index[k]
        window = self.fields[i, s:s + self.t_in + self.t_out]
        return window[:self.t_in], window[self.t_in:]


class EpochShuffle(Sampler[int]):
    """A shuffle that depends only on (seed, epoch): a resumed run sees the same batches as an
    uninterrupted one (Lightning calls ``set_epoch`` at every epoch start)."""

    def __init__(self, n: int, seed: int = 0):
        self.n, self.seed, self.epoch = n, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class GeneratedDataModule(L.LightningDataModule):
    """What every data module of a generated data set shares: its config, generation on first use
    (``prepare_data``) and the four dataloader hooks, each one call of :meth:`_loader`.

    Subclasses implement ``_loader(split, shuffle)`` (training shuffles, evaluation does not) and
    override a hook only where it serves something else (task batches, step indices).
    """

    def __init__(self, data_cfg: dict, root: str | Path, progress: bool = True, seed: int = 0):
        super().__init__()
        self.cfg, self.root, self.progress, self.seed = data_cfg, Path(root), progress, int(seed)
        self.stats: dict | None = None

    def prepare_data(self) -> None:
        ensure_generated(self.cfg, self.root, progress=self.progress)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        raise NotImplementedError

    def _stride(self, split: str) -> int | None:
        """Distance between window starts: ``window.stride`` in training, ``eval_stride`` otherwise."""
        w = self.cfg["window"]
        return w.get("stride", 1) if split == "train" else w.get("eval_stride", w.get("stride", 1))

    def _batches(self, ds: Dataset, shuffle: bool) -> DataLoader:
        """The loader of ``ds`` with the config's batch size and workers; training shuffles by
        (seed, epoch) (:class:`EpochShuffle`), evaluation keeps the order."""
        ld = self.cfg["loader"]
        # pinned host batches make Lightning's copy to the GPU asynchronous (it passes non_blocking)
        pin = ld.get("pin_memory", "auto")
        pin = self._on_cuda() if pin in (None, "auto") else bool(pin)
        workers = int(ld.get("num_workers", 0))
        return DataLoader(ds, batch_size=int(ld["batch_size"]),
                          sampler=EpochShuffle(len(ds), self.seed) if shuffle else None,
                          num_workers=workers, drop_last=False, pin_memory=pin, persistent_workers=workers > 0)

    def _on_cuda(self) -> bool:
        """Whether the attached trainer runs on a CUDA device (False when there is none)."""
        trainer = getattr(self, "_trainer", None)
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self, split: str = "test") -> DataLoader:
        return self._loader(split, shuffle=False)


class TrajectoryDataModule(GeneratedDataModule):
    """Generates (when missing) and serves a trajectory data set.

    ``stats`` holds the training split's mean and standard deviation (scalars), used by the task's
    normaliser; they come from the training split only. Input → output pairs (``spec.kind:
    pair2d``) get separate output statistics (``out_mean``, ``out_std``).
    """

    def __init__(self, data_cfg: dict, root: str | Path, progress: bool = True, seed: int = 0):
        super().__init__(data_cfg, root, progress, seed)
        self.splits: dict[str, torch.Tensor] = {}
        self.times = None

    def load(self, split: str) -> torch.Tensor:
        if split not in self.splits:
            store = ensure_generated(self.cfg, self.root, splits=[split], progress=self.progress)
            fields, times, _ = store.read(split)
            self.splits[split] = torch.from_numpy(fields)
            self.times = times
        return self.splits[split]

    def setup(self, stage: str | None = None) -> None:
        train = self.load("train")
        self.stats = {"mean": float(train.mean()), "std": float(train.std())}
        if self.cfg.get("spec", {}).get("kind") == "pair2d":
            # input and output are different fields (a coefficient and a solution, a forcing and a
            # vorticity): one scalar scale would squash the smaller one, so each gets its own
            t_in = int(self.cfg["window"]["t_in"])
            inputs, outputs = train[:, :t_in], train[:, t_in:]
            self.stats = {"mean": float(inputs.mean()), "std": float(inputs.std()),
                          "out_mean": float(outputs.mean()), "out_std": float(outputs.std())}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        w = self.cfg["window"]
        ds = TrajectoryWindows(self.load(split), int(w["t_in"]), int(w["t_out"]), self._stride(split))
        return self._batches(ds, shuffle)
