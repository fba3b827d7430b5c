"""Semilinear recursive operator with a learned observer (NODA, arXiv 2402.15656): one network
that predicts a PDE state step by step and corrects it whenever measurements arrive.

    prediction   ẑ_k^f = ẑ_{k-1} + W(ẑ_{k-1})                               (residual operator step)
    innovation   ν = M_k ⊙ (y_k − E(ẑ_k^f))                                  (only at measured steps)
    correction   ẑ_k   = ẑ_k^f + sigmoid(G[ẑ_k^f, ν, M_k]) ⊙ C[ẑ_k^f, ν, M_k]   (gain=gated, default)
                 ẑ_k   = ẑ_k^f + g(ẑ_k^f, M_k) ⊙ K(ν)                        (gain=innovation)

W is any operator backbone (``predictor``: a neuropde model taking (B, c, *space) -> (B, c, *space);
an FNO by default) and E is the identity or a learned 1×1 map. ``gain=innovation`` has the
observer's form ẑ^f + K(ẑ^f)[y − E(ẑ^f)]: K is a linear operator of the innovation (a spectral
convolution plus a 1×1 map, no bias, no activation) and g = sigmoid(FNO[ẑ^f, M]) a gate from the
prediction and the mask only, so the correction vanishes exactly when the measurements agree with
the prediction and scales linearly with ν. ``gain=gated`` (two FNOs on [ẑ^f, ν, M]) corrects even
at ν = 0, but tracked KS 2.8× better in the issue-24 comparison (experiments/observer/README.md:
the innovation gain's gate saturates at 1 and leaves a fixed linear filter), so it stays the
default. The mask M_k is an input of the gain so that "no measurement here" and "measurement
agrees" are told apart. Without the paper's code, the gain architecture, the loss and the protocol
follow the project's specification in shared/reference/semilinear-observer.md §2.3.
All states here are normalised fields (the task maps physical units in and out).
"""
from __future__ import annotations

import torch
from torch import nn

from neuropde.errors import UserError
from neuropde.models.fno import FNO
from neuropde.nn.spectral import SpectralConv

GAINS = ("gated", "innovation")


def _init_gate_bias(gate: FNO, gate_bias: float) -> None:
    """Start the gate's output at sigmoid(gate_bias) (−2: 0.12), so that a freshly added gain
    barely disturbs a pretrained predictor."""
    projection = gate.fno.projection
    last = projection.fc2 if gate.backend == "neuropde" else projection.fcs[-1]
    nn.init.constant_(last.bias, float(gate_bias))


class InnovationGain(nn.Module):
    """K_θ(ẑ^f): the correction g(ẑ^f, M) ⊙ K(ν), linear in the innovation ν.

    K(ν) = S(ν) + A ν: S a spectral convolution (c -> r, ``modes``, no bias) and A a 1×1 map
    without bias; nothing else, so K(0) = 0 exactly and K(αν₁ + βν₂) = αK(ν₁) + βK(ν₂). The gate
    g = sigmoid(FNO[ẑ^f, M]) (2·c channels -> r) sees the prediction and where measurements are,
    never the measurements themselves; its output bias starts at ``gate_bias``. With ``rank`` r
    = None (default) r = c and the correction is g ⊙ K(ν) itself; with an integer r it is
    P(g ⊙ K(ν)), P a 1×1 map r -> c without bias: the gate then weighs r learned filters of the
    innovation point by point, still linearly in ν (a scale the sigmoid cannot give sits in P).
    A fresh gain corrects by ≈ sigmoid(gate_bias)·ν: K starts as the identity (S = 0; with r
    channels, S small and random, A = 1 and P = 1/r).
    """

    def __init__(self, channels: int, modes: tuple[int, ...], width: int = 32, n_layers: int = 2,
                 gate_bias: float = -2.0, backend: str = "neuralop", rank: int | None = None):
        super().__init__()
        r = channels if rank is None else int(rank)
        if r < 1:
            raise UserError(f"model.net.gain_rank={rank}: needs a positive number of channels (or null)")
        self.gate = FNO(2 * channels, r, modes=modes, width=width, n_layers=n_layers, backend=backend)
        _init_gate_bias(self.gate, gate_bias)
        self.spectral = SpectralConv(channels, r, modes, bias=False, init_scale=0.0 if rank is None else 0.05)
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[len(modes)]
        self.pointwise = conv(channels, r, 1, bias=False)
        self.project = None if rank is None else conv(r, channels, 1, bias=False)
        with torch.no_grad():
            if rank is None:
                self.pointwise.weight.copy_(torch.eye(channels).reshape(self.pointwise.weight.shape))
            else:
                self.pointwise.weight.fill_(1.0)
                self.project.weight.fill_(1.0 / r)

    def operator(self, innovation: torch.Tensor) -> torch.Tensor:
        """K(ν): (B, c, *space) -> (B, r, *space), linear."""
        return self.spectral(innovation) + self.pointwise(innovation)

    def forward(self, pred: torch.Tensor, innovation: torch.Tensor, mask: torch.Tensor):
        """(B, c, *space) each -> correction (B, c, *space), gate (B, r, *space)."""
        gate = torch.sigmoid(self.gate(torch.cat([pred, mask], dim=1)))
        correction = gate * self.operator(innovation)
        return (correction if self.project is None else self.project(correction)), gate


class GatedGain(nn.Module):
    """The default gain (``gain=gated``): g ⊙ c from [prediction, innovation, mask] (3·c channels
    -> c), g = sigmoid(FNO_g), c = FNO_c. Not zero at ν = 0 (c has biases and activations).

    The gate's output bias starts at ``gate_bias`` (−2: sigmoid ≈ 0.12), so a freshly added gain
    barely disturbs a pretrained predictor.
    """

    def __init__(self, channels: int, modes: tuple[int, ...], width: int = 32, n_layers: int = 2,
                 gate_bias: float = -2.0, backend: str = "neuralop"):
        super().__init__()
        kw = dict(modes=modes, width=width, n_layers=n_layers, backend=backend)
        self.gate = FNO(3 * channels, channels, **kw)
        self.candidate = FNO(3 * channels, channels, **kw)
        _init_gate_bias(self.gate, gate_bias)

    def forward(self, pred: torch.Tensor, innovation: torch.Tensor, mask: torch.Tensor):
        """(B, c, *space) each -> correction (B, c, *space), gate (B, c, *space)."""
        inputs = torch.cat([pred, innovation, mask], dim=1)
        gate = torch.sigmoid(self.gate(inputs))
        return gate * self.candidate(inputs), gate


class RecursiveObserver(nn.Module):
    """Prediction + correction recursion over a trajectory.

    Parameters
    ----------
    predictor : the one-step operator W: (B, channels, *space) -> same shape.
    modes : Fourier modes of the gain networks per spatial axis (1 entry for 1-D data).
    channels : field channels c (1 for scalar fields).
    gain : ``gated`` (g ⊙ c from FNOs on [ẑ^f, ν, M]; the default, also of configs saved before
        this option existed, which were all trained with it) or ``innovation`` (g(ẑ^f, M) ⊙ K(ν),
        K linear: no correction at ν = 0).
    gain_width, gain_layers : size of the gain FNOs (the gate; with ``gated`` also the candidate).
    gain_rank : ``innovation`` only: None (K maps c -> c channels) or the number r of filters of
        the innovation that the gate weighs (see :class:`InnovationGain`).
    gain_backend : their implementation, ``neuralop`` or ``neuropde`` (same network, faster:
        :class:`neuropde.models.fno.FNO`).
    learn_observation : E learned (1×1 conv, c -> 64 -> c) instead of the identity.
    """

    def __init__(self, predictor: nn.Module, modes: tuple[int, ...], channels: int = 1, gain_width: int = 32,
                 gain_layers: int = 2, gate_bias: float = -2.0, learn_observation: bool = False,
                 gain_backend: str = "neuralop", gain: str = "gated", gain_rank: int | None = None):
        super().__init__()
        if gain not in GAINS:
            raise UserError(f"model.net.gain={gain!r} is not a gain; choose one of {', '.join(GAINS)} "
                            "(gated: FNOs on [prediction, innovation, mask]; "
                            "innovation: g(prediction, mask) * K(innovation), K linear)")
        self.predictor, self.channels, self.dim, self.gain_kind = predictor, int(channels), len(modes), gain
        if gain == "innovation":
            self.gain = InnovationGain(self.channels, tuple(modes), gain_width, gain_layers, gate_bias, gain_backend,
                                       gain_rank)
        elif gain_rank is not None:
            raise UserError(f"model.net.gain_rank={gain_rank} is an option of gain=innovation, not of gain={gain}")
        else:
            self.gain = GatedGain(self.channels, tuple(modes), gain_width, gain_layers, gate_bias, gain_backend)
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[self.dim]
        self.observation = (nn.Sequential(conv(self.channels, 64, 1), nn.GELU(), conv(64, self.channels, 1))
                            if learn_observation else nn.Identity())

    def predict(self, z: torch.Tensor) -> torch.Tensor:
        """One prediction step: (B, c, *space) -> (B, c, *space)."""
        return z + self.predictor(z)

    def correct(self, pred: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, active: torch.Tensor):
        """Correct the trajectories with ``active`` (B,) measurements; the others pass through.

        y, mask : (B, c, *space) measurement (anything where mask = 0) and 0/1 availability.
        Returns the analysis state and the mean gate value over active trajectories (nan if none).
        """
        innovation = mask * (y - self.observation(pred))
        correction, gate = self.gain(pred, innovation, mask)
        on = active.to(pred.dtype).reshape(-1, *([1] * (pred.dim() - 1)))
        gate_mean = (gate.mean(dim=tuple(range(1, gate.dim()))) * on.flatten()).sum() / on.sum().clamp(min=1)
        return pred + on * correction, gate_mean

    def rollout(self, y: torch.Tensor, mask: torch.Tensor, tbptt: int | None = None) -> dict:
        """Run the recursion over T steps.

        y, mask : (B, T, *space) measurements and 0/1 availability (a frame with an all-zero mask
            has no measurement; frame 0 should have one). The state starts from the data mean (0)
            and is corrected by the frame-0 measurement.
        tbptt : detach the state every this many steps (truncated backpropagation through time).
        Returns ``states`` (B, T, *space) (analysis states, = predictions where nothing was
        measured), ``predictions`` (B, T, *space) (the prior ẑ^f of every step; frame 0 is the
        data mean) and ``gate`` (T,) mean gate per step (nan without measurements).
        """
        B, T = y.shape[:2]
        if self.channels != 1:
            raise NotImplementedError("trajectory tensors here hold scalar fields (channels = 1)")
        active = mask.flatten(2).amax(dim=2) > 0  # (B, T)
        state = torch.zeros_like(y[:, :1])
        states, priors, gates = [], [], []
        for k in range(T):
            if k > 0:
                if tbptt and k % tbptt == 0:
                    state = state.detach()
                state = self.predict(state)
            priors.append(state)
            g = torch.tensor(float("nan"), device=y.device)
            if active[:, k].any():
                state, g = self.correct(state, y[:, k:k + 1], mask[:, k:k + 1], active[:, k])
            states.append(state)
            gates.append(g)
        return {"states": torch.cat(states, 1), "predictions": torch.cat(priors, 1), "gate": torch.stack(gates)}

    def forward(self, z: torch.Tensor, steps: int = 1) -> torch.Tensor:
        """Open-loop prediction of ``steps`` frames after z: (B, 1, *space) -> (B, steps, *space)."""
        out = []
        for _ in range(steps):
            z = self.predict(z)
            out.append(z)
        return torch.cat(out, 1)
