"""Measurement models for data assimilation: which points are observed, when, and with what noise.

A measurement of the clean state z_k (any number of spatial axes) is

    y_k = z_k + σ · scale · ε,   ε ~ N(0, 1),   observed where mask_k = 1,

with ``scale`` the training data's standard deviation (so σ is relative noise). The spatial part of
the mask is drawn once per trajectory (sensors do not move); the temporal part says at which
steps a measurement arrives. Clean states are stored; measurements are drawn here, from a seeded
generator for validation and test, so every evaluation sees the same measurements.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from neuropde.errors import UserError

OPERATORS = ("full", "random", "subsample")


@dataclass
class MeasurementModel:
    """One measurement setting (``data.measurement`` in the config).

    Parameters
    ----------
    operator : ``full`` (every grid point), ``random`` (a fraction of the points, drawn per
        trajectory) or ``subsample`` (every ``stride``-th point along each axis).
    fraction : share of points observed by ``random``.
    stride : spacing of ``subsample``.
    noise : σ, the noise standard deviation relative to the data's standard deviation.
    every : a measurement every ``every`` steps (steps every, 2·every, ... of the horizon) ...
    probability : ... or, when set, at each step independently with this probability (irregular
        times, drawn per trajectory). ``every: 0`` with no probability means no measurements (open loop).
    """

    operator: str = "random"
    fraction: float = 0.25
    stride: int = 4
    noise: float = 0.05
    every: int = 5
    probability: float | None = None

    def __post_init__(self):
        if self.operator not in OPERATORS:
            raise UserError(f"measurement.operator={self.operator!r}: choose one of {', '.join(OPERATORS)}")
        if not 0.0 < float(self.fraction) <= 1.0:
            raise UserError(f"measurement.fraction={self.fraction} must be in (0, 1]")
        if int(self.stride) < 1 or int(self.every) < 0 or float(self.noise) < 0:
            raise UserError("measurement.stride must be >= 1, measurement.every >= 0 and measurement.noise >= 0")
        if self.probability is not None and not 0.0 <= float(self.probability) <= 1.0:
            raise UserError(f"measurement.probability={self.probability} must be in [0, 1] (or null for regular times)")

    @classmethod
    def from_config(cls, cfg: dict | None, **overrides) -> "MeasurementModel":
        known = {k: v for k, v in dict(cfg or {}).items()}
        unknown = set(known) - set(cls.__dataclass_fields__)
        if unknown:
            raise UserError(f"unknown measurement option(s) {sorted(unknown)}; known: "
                            f"{', '.join(cls.__dataclass_fields__)}")
        known.update(overrides)
        return cls(**known)

    def spatial_mask(self, batch: int, space: tuple[int, ...], generator: torch.Generator | None = None,
                     device=None) -> torch.Tensor:
        """Observed points of each trajectory: (batch, *space) float of 0/1."""
        if self.operator == "full":
            return torch.ones(batch, *space, device=device)
        if self.operator == "random":
            return random_points(batch, space, torch.full((batch,), float(self.fraction)), generator, device)
        mask = torch.zeros(*space, device=device)
        mask[tuple(slice(None, None, int(self.stride)) for _ in space)] = 1.0
        return mask.expand(batch, *space).clone()

    def time_mask(self, batch: int, steps: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Steps with a measurement: (batch, steps) bool, step k = 1..steps after the start."""
        if self.probability is not None:
            return torch.rand(batch, steps, generator=generator).to(device) < float(self.probability)
        k = torch.arange(1, steps + 1, device=device)
        every = int(self.every)
        hit = (k % every == 0) if every > 0 else torch.zeros(steps, dtype=torch.bool, device=device)
        return hit.expand(batch, steps).clone()

    def measure(self, traj: torch.Tensor, warmup: int, generator: torch.Generator | None = None,
                scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Measurements of trajectories (B, T, *space): every frame of the first ``warmup``, then
        this model's steps; noise σ·``scale`` (the data's std, or 1 for
        normalised fields). Returns y (0 where unobserved) and the 0/1 mask, both (B, T, *space)."""
        B, T, space = traj.shape[0], traj.shape[1], tuple(traj.shape[2:])
        points = self.spatial_mask(B, space, generator, traj.device)
        times = torch.ones(B, T, dtype=torch.bool, device=traj.device)
        if T > warmup:
            times[:, warmup:] = self.time_mask(B, T - warmup, generator, traj.device)
        mask = points[:, None] * times.reshape(B, T, *([1] * len(space))).to(traj.dtype)
        return noisy(traj, float(self.noise), scale, generator) * mask, mask


def random_points(batch: int, space: tuple[int, ...], fraction: torch.Tensor,
                  generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Exactly round(fraction_b · points) random points of each trajectory (at least one):
    (batch, *space) float of 0/1. ``fraction``: (batch,)."""
    points = 1
    for n in space:
        points *= int(n)
    scores = torch.rand(batch, points, generator=generator)
    count = (fraction.float() * points).round().clamp(min=1).long()
    rank = scores.argsort(dim=1).argsort(dim=1)  # rank of every point in its row
    return (rank < count[:, None]).float().reshape(batch, *space).to(device)


def noisy(z: torch.Tensor, noise: torch.Tensor | float, scale: float,
          generator: torch.Generator | None = None) -> torch.Tensor:
    """z + noise · scale · ε; ``noise`` a float or a (batch,) tensor (one σ per trajectory)."""
    if not torch.is_tensor(noise):
        noise = torch.full((z.shape[0],), float(noise))
    eps = torch.randn(z.shape, generator=generator, dtype=z.dtype).to(z.device)
    return z + (noise.to(z) * float(scale)).reshape(-1, *([1] * (z.dim() - 1))) * eps
