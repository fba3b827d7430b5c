"""Small helpers several test files share (fixtures live in conftest.py)."""
from __future__ import annotations

import torch


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative error ‖a − b‖ / ‖b‖ (Frobenius norm over every entry)."""
    return ((a - b).norm() / b.norm()).item()


def seeded(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``: draws that do not touch the global RNG."""
    return torch.Generator().manual_seed(seed)


def fitted_order(hs, errs) -> float:
    """Least-squares slope of log(error) against log(step): the observed order of convergence."""
    x = torch.tensor(hs, dtype=torch.float64).log()
    y = torch.tensor(errs, dtype=torch.float64).log()
    x = x - x.mean()
    return ((x * (y - y.mean())).sum() / (x * x).sum()).item()
