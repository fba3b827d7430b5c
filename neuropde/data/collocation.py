"""Data for PINNs on the unit ball in d dimensions (``data=highdim``): no files.

Training points are resampled at every step by the task itself, on its device, from a generator
seeded by (seed, step), so the train loader only counts steps. Validation and test points (with
the exact solution) are regenerated batch by batch from ``data.seed``: at d = 10⁵ the 20,000 test
points of the reference would take 8 GB as a file, while drawing them again costs less than
reading them.
"""
from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from neuropde.pde.highdim import BallProblem, sample_ball

_SPLIT_ID = {"train": 0, "val": 1, "test": 2}


def problem_from_data(data_cfg: dict) -> BallProblem:
    return BallProblem(int(data_cfg["dim"]), data_cfg["operator"], data_cfg["solution"], int(data_cfg["coef_seed"]))


class BallPoints(Dataset):
    """Evaluation points of one split, one batch per item: item k -> (x (b, d), u* (b,)) in float32.

    Every batch has its own seed (data seed, split, k), so a batch is the same whatever else is
    evaluated; the exact values are computed in float64.
    """

    def __init__(self, problem: BallProblem, n: int, batch_size: int, sampler: str, seed: int, split: str):
        self.problem, self.n, self.batch, self.sampler = problem, int(n), int(batch_size), sampler
        self.seed, self.split = int(seed), split

    def __len__(self) -> int:
        return -(-self.n // self.batch)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= k < len(self):
            raise IndexError(k)
        size = min(self.batch, self.n - k * self.batch)
        state = np.random.SeedSequence([self.seed, _SPLIT_ID[self.split], k]).generate_state(1)[0]
        g = torch.Generator().manual_seed(int(state))
        x = sample_ball(size, self.problem.dim, self.sampler, g, dtype=torch.float64)
        return x.float(), self.problem.exact(x).float()


class CollocationDataModule(L.LightningDataModule):
    """Steps for training, seeded point batches for validation and test (``spec.kind: highdim``).

    ``cfg["loader"]["batch_size"]`` is the number of collocation points per step (N_r), so the
    effective batch of ``optimizer.batch_scaling`` counts points.
    """

    def __init__(self, data_cfg: dict, root=None, progress: bool = True, seed: int = 0):
        super().__init__()  # root, progress: the data module signature; nothing is stored on disk
        self.cfg, self.seed = data_cfg, int(seed)
        self.stats = None
        self.problem = problem_from_data(data_cfg)

    def prepare_data(self) -> None:
        pass

    def setup(self, stage: str | None = None) -> None:
        pass

    def points(self, split: str) -> BallPoints:
        ld = self.cfg["loader"]
        return BallPoints(self.problem, int(self.cfg["samples"][split]), int(ld.get("eval_batch_size", 1000)),
                          self.cfg["sampler"], int(self.cfg["seed"]), split)

    def train_dataloader(self) -> DataLoader:
        # the task draws the points; an item is only the step's index within the epoch
        return DataLoader(range(int(self.cfg["steps_per_epoch"])), batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.points("val"), batch_size=None)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.points("test"), batch_size=None)

    def predict_dataloader(self, split: str = "test") -> DataLoader:
        return DataLoader(self.points(split), batch_size=None)
