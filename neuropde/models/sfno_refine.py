"""Spectral-Refiner fine-tuning of a trained SFNO (arXiv 2405.17211), and its error estimate.

After training, the SFNO's last spectral layer (the output operator) is copied with its frequency
truncation lifted, everything before it is frozen, and the copy is optimised per trajectory on the
negative-Sobolev (H⁻¹, Bochner in time) norm of the Navier–Stokes residual of its own prediction:
no ground truth is used. The same residual norm, before refinement, is an a-posteriori estimate of
the prediction's error.

Unlike the reference code, ∂ₜω comes from the predicted frames themselves (high-order finite
differences, :func:`neuropde.pde.residual.time_derivative`), so a field that does not solve the
equation has a large residual.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import functional_call, vmap

from neuropde.models.sfno import SFNO, OutputOperator
from neuropde.pde.residual import navier_stokes_residual, residual_norm


def nyquist_modes(n_x: int, n_y: int, op: OutputOperator, t_latent: int) -> tuple[int, int, int]:
    """The most modes the grid (and the output operator's time axis) can hold."""
    n_t = 2 * (t_latent + 1)  # the output operator's zero-padded input length
    return (n_x + 1) // 2, (n_y + 1) // 2, (n_t + 1) // 2


def enlarge_output_operator(op: OutputOperator, modes: tuple[int, int, int], delta: float = 1.0) -> OutputOperator:
    """Copy of ``op`` keeping ``modes`` (≥ the trained ones); it computes the same function.

    New weight and bias entries are zero; the trained bias is rescaled so that ``delta * bias``
    is unchanged.
    """
    old = op.sconv
    modes = tuple(max(int(m), int(o)) for m, o in zip(modes, old.modes))
    new = OutputOperator(modes, delta).to(device=old.weight.device, dtype=old.weight.real.dtype)
    with torch.no_grad():
        new.sconv.weight.zero_()
        new.sconv.bias.zero_()
        # along x and y the blocks hold frequencies 0..m-1 then -m..-1 ("fftfreq" order)
        (mx, my, mt), (Mx, My, _) = old.modes, modes
        ix = list(range(mx)) + list(range(2 * Mx - mx, 2 * Mx))
        iy = list(range(my)) + list(range(2 * My - my, 2 * My))
        sel = torch.meshgrid(torch.tensor(ix), torch.tensor(iy), indexing="ij")
        new.sconv.weight[:, :, sel[0], sel[1], :mt] = old.weight.to(new.sconv.weight.dtype)
        new.sconv.bias[sel[0], sel[1], :mt] = old.bias.to(new.sconv.bias.dtype) * (old.delta / delta)
    return new


@dataclass
class Refinement:
    """Result of :func:`refine` for a batch of B trajectories (physical fields)."""

    prediction: Tensor  # (B, t_out, X, Y) before refinement
    refined: Tensor  # (B, t_out, X, Y)
    estimate: Tensor  # (B,) residual norm of the prediction: the error estimate
    estimate_refined: Tensor  # (B,) residual norm after refinement
    history: list  # mean residual norm per step
    seconds: float


def refine(task, x: Tensor, t_out: int, solver, dt: float, modes: tuple | None = None, steps: int = 100,
           lr_weight: float = 3e-6, lr_bias: float = 3e-5, delta: float = 1.0, accuracy: int = 4,
           dtype: torch.dtype = torch.float64) -> Refinement:
    """Fine-tune the output operator of ``task.net`` (an SFNO) separately for each trajectory.

    Parameters
    ----------
    task : OperatorTask holding the SFNO and the normaliser.
    x : Tensor (B, T_in, X, Y), physical input frames.
    t_out : predicted frames, spaced ``dt`` after the last input frame.
    solver : NavierStokes2D on the X×Y grid (its ν, L and forcing define the residual).
    modes : (m_x, m_y, m_t) of the enlarged layer; None entries mean "as many as the grid holds".
    steps, lr_weight, lr_bias : Adam iterations and learning rates (weights, Fourier-domain bias).
    accuracy : order of the finite differences in time.
    """
    net: SFNO = task.net
    if not isinstance(net, SFNO):
        raise TypeError("refinement needs an SFNO (model=sfno): it fine-tunes the SFNO output operator")
    start = time.perf_counter()
    mean, std = task.out_mean.to(dtype), task.out_std.to(dtype)  # of the predicted (output) frames
    with torch.no_grad():
        r, last = net.features(task.normalize(x))
    r, last, x = r.to(dtype), last.to(dtype), x.to(dtype)
    full = nyquist_modes(x.shape[-2], x.shape[-1], net.output_operator, net.t_latent)
    modes = tuple(f if m is None else int(m) for m, f in zip(modes or (None,) * 3, full))
    head = enlarge_output_operator(copy.deepcopy(net.output_operator).to(dtype), modes, delta)
    B = x.shape[0]
    w = head.sconv.weight.detach()[None].repeat(B, *[1] * head.sconv.weight.dim()).requires_grad_(True)
    b = head.sconv.bias.detach()[None].repeat(B, *[1] * head.sconv.bias.dim()).requires_grad_(True)

    def predict(w, b):
        def one(w1, b1, r1, l1):
            return functional_call(head, {"sconv.weight": w1, "sconv.bias": b1}, (r1[None], l1[None], t_out))[0]
        return vmap(one)(w, b, r, last) * std + mean  # (B, t_out, X, Y) physical

    def residual(pred):
        traj = torch.cat([x[:, -1:], pred], dim=1)  # the last known frame anchors ∂ₜ at the start
        R = navier_stokes_residual(traj, dt, solver, accuracy=accuracy)
        return residual_norm(R, L=solver.L, s=-1.0, dt=dt)

    with torch.no_grad():
        before = predict(w, b)
        estimate = residual(before)
    opt = torch.optim.Adam([{"params": [w], "lr": lr_weight}, {"params": [b], "lr": lr_bias}])
    history = []
    for _ in range(int(steps)):
        opt.zero_grad(set_to_none=True)
        norms = residual(predict(w, b))
        # a sum of per-trajectory losses: Adam's elementwise updates keep trajectories independent
        norms.pow(2).sum().backward()
        opt.step()
        history.append(float(norms.detach().mean()))
    with torch.no_grad():
        after = predict(w, b)
        estimate_after = residual(after)
    return Refinement(before, after, estimate, estimate_after, history, time.perf_counter() - start)
