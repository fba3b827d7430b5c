"""Second-order-in-time 1-D periodic families ``u_tt = c² u_xx − m² u − f(u)`` for multi-operator
data (LeMON, arXiv 2408.16168): wave (``m = 0``, ``f = 0``), Klein–Gordon (``f = 0``) and
sine-Gordon (``m = 0``, ``f = sin``).

The linear part is a harmonic oscillator per Fourier mode, with frequency ``ω(k) = √(c²k² + m²)``,
and is advanced exactly (a rotation of ``(û, v̂)``, ``v = u_t``), so the linear families are exact
for any step. A nonlinear force is added by splitting: the force alone leaves ``u`` fixed and
moves ``v`` by ``−h f(u)`` (exact too), and Strang's kick–drift–kick composition of the two flows
is a symplectic, time-reversible second-order method; Yoshida's triple jump of it (1990) is
fourth order. Being symplectic, the schemes keep the energy
``∫ ½v² + ½c²u_x² + ½m²u² + F(u) dx`` (``F' = f``) within ``O(h^p)`` for all times instead of
letting it drift.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["KleinGordon1D", "SineGordon1D", "Wave1D"]

# Yoshida's triple jump: steps w1 h, w0 h, w1 h of a symmetric second-order method, with
# 2 w1 + w0 = 1 (consistency) and 2 w1³ + w0³ = 0 (the h³ error terms cancel)
_W1 = 1.0 / (2.0 - 2.0 ** (1.0 / 3.0))
_W0 = 1.0 - 2.0 * _W1


class KleinGordon1D(nn.Module):
    """Batched solver of ``u_tt = c² u_xx − m² u`` on the periodic ``[0, L)``; exact in time.

    Subclasses with a nonlinear force set ``linear = False`` and override :meth:`force` and
    :meth:`potential`; they are integrated by Strang (``order=2``) or Yoshida (``order=4``)
    splitting. Grid ``x_i = i L / n``; spectra are ``torch.fft.rfft`` of the fields. An
    ``nn.Module`` only so that ``.to(device)`` moves its buffers.

    Parameters
    ----------
    n : grid points.
    L : domain length.
    c : wave speed.
    m : mass (``m = 0`` is the wave equation).
    dtype : float32 or float64.
    device : where the buffers live; inputs are moved there.
    """

    #: whether :meth:`force` is zero (then every step is exact and ``order`` is irrelevant)
    linear = True

    def __init__(self, n: int, L: float, c: float = 1.0, m: float = 0.0, dtype=torch.float64,
                 device="cpu"):
        super().__init__()
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        if n < 4:
            raise ValueError(f"n must be at least 4 grid points, got {n}")
        self.n, self.L, self.c, self.m = int(n), float(L), float(c), float(m)
        j = torch.arange(self.n // 2 + 1, dtype=torch.float64, device=device)
        k = (2 * math.pi / self.L) * j  # even derivatives only: the Nyquist mode keeps its k
        self.register_buffer("k", k.to(dtype), persistent=False)
        self.register_buffer("omega", (self.c ** 2 * k ** 2 + self.m ** 2).sqrt().to(dtype),
                             persistent=False)

    # --- nonlinear force (none here) -----------------------------------------------------------
    def force(self, u: torch.Tensor) -> torch.Tensor:
        """``f(u)`` pointwise, (..., n) -> (..., n)."""
        return torch.zeros_like(u)

    def potential(self, u: torch.Tensor) -> torch.Tensor:
        """``F(u)`` with ``F' = f`` and ``F(0) = 0``, pointwise: (..., n) -> (..., n)."""
        return torch.zeros_like(u)

    # --- helpers -------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.k.dtype

    @property
    def device(self) -> torch.device:
        return self.k.device

    def grid(self) -> torch.Tensor:
        """Grid points ``x_i = i L / n``: Tensor (n,)."""
        return torch.arange(self.n, dtype=self.dtype, device=self.device) * (self.L / self.n)

    def _drift(self, u: torch.Tensor, v: torch.Tensor, h: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact flow of the linear part over time h: (B, n), (B, n) -> (B, n), (B, n)."""
        u_hat, v_hat = torch.fft.rfft(u), torch.fft.rfft(v)
        cos = torch.cos(self.omega * h)
        # sin(ωh)/ω written with sinc so that the ω = 0 mode (mean, when m = 0) moves as u + h v
        sin_over = h * torch.sinc(self.omega * (h / math.pi))
        u_new = cos * u_hat + sin_over * v_hat
        v_new = -(self.omega ** 2) * sin_over * u_hat + cos * v_hat
        return torch.fft.irfft(u_new, n=self.n), torch.fft.irfft(v_new, n=self.n)

    def _strang(self, u, v, h):
        # half kick, exact drift, half kick: symmetric, hence time-reversible and of even order
        v = v - 0.5 * h * self.force(u)
        u, v = self._drift(u, v, h)
        return u, v - 0.5 * h * self.force(u)

    # --- public API ----------------------------------------------------------------------------
    def step(self, u: torch.Tensor, v: torch.Tensor, dt: float,
             order: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
        """Advance ``(u, u_t)`` by dt.

        Parameters
        ----------
        u, v : Tensors (B, n), the field and its time derivative.
        dt : time step.
        order : 2 (Strang) or 4 (Yoshida triple jump); ignored without a force (exact).

        Returns
        -------
        (Tensor (B, n), Tensor (B, n))
        """
        if self.linear:
            return self._drift(u, v, dt)
        if order == 2:
            return self._strang(u, v, dt)
        if order == 4:
            for w in (_W1, _W0, _W1):
                u, v = self._strang(u, v, w * dt)
            return u, v
        raise ValueError(f"order must be 2 (Strang) or 4 (Yoshida), got {order}")

    def energy(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``∫ ½v² + ½c²u_x² + ½m²u² + F(u) dx`` of states (..., n) -> (...).

        The quadratic part is summed over Fourier modes (Parseval), the Nyquist mode with its
        ``k²`` as in the time stepping, so that it is exactly the quantity the linear flow keeps;
        ``F`` is summed over the grid like the force.
        """
        u_hat, v_hat = torch.fft.rfft(u), torch.fft.rfft(v)
        # rfft keeps one of each ± pair: the interior modes count twice
        weight = torch.full_like(self.k, 2.0)
        weight[0] = 1.0
        if self.n % 2 == 0:
            weight[-1] = 1.0
        quadratic = (weight * (v_hat.abs() ** 2 + self.omega ** 2 * u_hat.abs() ** 2)).sum(-1)
        dx = self.L / self.n
        return 0.5 * dx / self.n * quadratic + dx * self.potential(u).sum(-1)

    def simulate(self, u0: torch.Tensor, v0: torch.Tensor | None, dt: float,
                 record_times: Sequence[float], order: int = 4,
                 return_velocity: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Integrate from ``t = 0`` with fixed steps dt and record the field at the given times.

        Parameters
        ----------
        u0 : Tensor (B, n), initial field.
        v0 : Tensor (B, n), initial ``u_t``; None starts at rest.
        dt : time step; every record time must be a whole number of steps (to 1e-6 of a step).
        record_times : non-decreasing times ``≥ 0`` (T of them); ``0`` records ``u0``.
        order : splitting order with a nonlinear force (2 or 4).
        return_velocity : also return ``u_t`` at the record times.

        Returns
        -------
        Tensor (B, T, n), or (u, u_t) both (B, T, n) with ``return_velocity``.
        """
        dt = float(dt)
        if not (dt > 0 and math.isfinite(dt)):
            raise ValueError(f"dt must be a positive finite time step, got {dt}")
        if u0.dim() != 2 or u0.shape[-1] != self.n:
            raise ValueError(f"u0 must be (B, {self.n}) for this solver's n={self.n}, got "
                             f"{tuple(u0.shape)}; resample it or build the solver with that n")
        u = u0.to(device=self.device, dtype=self.dtype)
        v = torch.zeros_like(u) if v0 is None else v0.to(device=self.device, dtype=self.dtype)
        if v.shape != u.shape:
            raise ValueError(f"v0 must have u0's shape {tuple(u.shape)}, got {tuple(v.shape)}")
        counts = []
        for t in record_times:
            steps = round(t / dt)
            if t < 0 or abs(t / dt - steps) > 1e-6 or (counts and steps < counts[-1]):
                raise ValueError(f"record times must be non-decreasing multiples of dt={dt} that are "
                                 f">= 0, got {t}; choose a dt that divides every record time")
            counts.append(steps)
        us, vs, done = [], [], 0
        for steps in counts:
            for _ in range(steps - done):
                u, v = self.step(u, v, dt, order)
            done = steps
            us.append(u)
            vs.append(v)
        u_out = torch.stack(us, dim=-2)
        return (u_out, torch.stack(vs, dim=-2)) if return_velocity else u_out


class Wave1D(KleinGordon1D):
    """Wave equation ``u_tt = c² u_xx`` on ``[0, L)`` (exact in time; d'Alembert's solution of the
    trigonometric interpolant). Parameters as :class:`KleinGordon1D` without ``m``."""

    def __init__(self, n: int, L: float, c: float = 1.0, dtype=torch.float64, device="cpu"):
        super().__init__(n, L, c=c, m=0.0, dtype=dtype, device=device)


class SineGordon1D(KleinGordon1D):
    """Sine-Gordon ``u_tt = c² u_xx − sin u`` on ``[0, L)`` by symplectic splitting.

    ``sin u`` is taken pointwise on the grid (collocation), so the kicks are exact flows of the
    semi-discrete system and its discrete energy (:meth:`energy`, ``F = 1 − cos u``) is what the
    splitting conserves. Parameters as :class:`KleinGordon1D` without ``m``.
    """

    linear = False

    def __init__(self, n: int, L: float, c: float = 1.0, dtype=torch.float64, device="cpu"):
        super().__init__(n, L, c=c, m=0.0, dtype=dtype, device=device)

    def force(self, u: torch.Tensor) -> torch.Tensor:
        return torch.sin(u)

    def potential(self, u: torch.Tensor) -> torch.Tensor:
        # 2 sin²(u/2) = 1 − cos u without the cancellation near u = 0
        return 2 * torch.sin(0.5 * u) ** 2
