"""Φ-ROM: physics-informed reduced-order modelling through a differentiable solver (Hosseini
Dashtbayaz, Salehipour, Butscher, Morris, arXiv 2505.14595).

A conditional implicit neural representation D(α, x) decodes a small latent α into a field at any
points, and a latent ODE α̇ = Ψ(α, μ) advances α in time. Ψ is not fitted to latent trajectories:
its target is the least-squares latent velocity α̇* = J⁺ r that reproduces the time derivative
r = (S_Δt(û) − û)/Δt a differentiable numerical solver S assigns to the decoded field û, with
J = ∂D/∂α evaluated on a random subset of points (stochastic hyper-reduction).

Pieces (``shared/reference/phi-rom.md`` §2.1–2.4): the decoders :class:`SineMLPDecoder` and
:class:`HyperDecoder`, the dynamics :class:`LatentDynamics`, :func:`bosh3_step` / :func:`rollout`,
:func:`latent_velocity`, :func:`random_subset` / :func:`gather_points`, :func:`fit_latent` and the
losses :func:`relative_l2` / :func:`dynamics_loss`. One training step, for a 1-D field on the
solver grid ``xs`` (n, 1) scaled to [−1, 1]::

    alpha = memory[traj, time]                                         # (B, k)
    u_hat = decoder(alpha, xs)                                         # (B, n, 1)
    r = solver_time_derivative(solver, u_hat[..., 0], dt)[..., None]  # (B, n, 1)
    idx = random_subset(n, 0.1, B, generator, min_points=k)            # (B, m)
    a_star, finite, n_bad = latent_velocity(decoder, alpha, xs[idx], gather_points(r, idx))
    l_rec = relative_l2(decoder(alpha, xs), u).mean()
    l_dyn = dynamics_loss(psi(alpha, mu), a_star)
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.func import jacfwd, vmap

from neuropde.errors import UserError
from neuropde.losses import rel_l2

__all__ = ["scale_coordinates", "SineMLPDecoder", "HyperDecoder", "make_decoder", "LatentDynamics", "bosh3_step",
           "rollout", "LatentVelocity", "latent_velocity", "random_subset", "gather_points",
           "fit_latent", "relative_l2", "dynamics_loss"]


def scale_coordinates(x: Tensor, lo, hi) -> Tensor:
    """Map coordinates from the box [lo, hi] to [−1, 1]: x (..., d), lo/hi scalars or (d,)."""
    lo = torch.as_tensor(lo, dtype=x.dtype, device=x.device)
    hi = torch.as_tensor(hi, dtype=x.dtype, device=x.device)
    return 2 * (x - lo) / (hi - lo) - 1


# --- Decoders ----------
class _Decoder(nn.Module):
    """Shared shape handling and output de-normalisation of the conditional INRs.

    ``forward(alpha, x)``: alpha (B, k) with x (P, d) shared by all samples or (B, P, d) per sample
    -> (B, P, C). Unbatched alpha (k,) with x (P, d) gives (P, C) (the form vmap sees).
    """

    def __init__(self, coord_dim: int, latent_dim: int, out_channels: int):
        super().__init__()
        self.coord_dim, self.latent_dim, self.out_channels = int(coord_dim), int(latent_dim), int(out_channels)
        # buffers, so that the statistics travel with state_dict / checkpoints
        self.register_buffer("out_mean", torch.zeros(self.out_channels))
        self.register_buffer("out_std", torch.ones(self.out_channels))

    @torch.no_grad()
    def set_output_normalization(self, mean, std) -> None:
        """Decoded fields become ``net · std + mean`` per channel: mean, std scalars or (C,)."""
        self.out_mean.copy_(torch.as_tensor(mean, dtype=self.out_mean.dtype).expand(self.out_channels))
        self.out_std.copy_(torch.as_tensor(std, dtype=self.out_std.dtype).expand(self.out_channels))

    def forward(self, alpha: Tensor, x: Tensor) -> Tensor:
        if alpha.shape[-1] != self.latent_dim or x.shape[-1] != self.coord_dim or x.dim() < 2:
            k, d = self.latent_dim, self.coord_dim
            raise ValueError(f"{type(self).__name__} wants alpha (B, {k}) and x (P, {d}) or (B, P, {d}); "
                             f"got {tuple(alpha.shape)}, {tuple(x.shape)}")
        return self._net(alpha[..., None, :], x) * self.out_std + self.out_mean

    def _net(self, alpha: Tensor, x: Tensor) -> Tensor:  # alpha (..., 1, k), x (..., P, d)
        raise NotImplementedError


class SineMLPDecoder(_Decoder):
    """MLP on [x, α] with sine activations (the reference's "mlp" decoder, used for Burgers).

    ``depth`` hidden layers ``h ↦ sin(w0 (W h + b))`` and a linear output (Equinox's ``depth``:
    ``depth + 1`` linear layers). SIREN initialisation: first layer U(±1/fan_in), later layers
    U(±√(6/fan_in)/w0), so that pre-activations stay O(1) at any depth. The reference uses plain
    ``sin`` with default uniform init; ``w0`` and the SIREN scaling are ours.

    Parameters
    ----------
    coord_dim, latent_dim, out_channels : d, k, C.
    width : hidden width (reference Burgers: 32).
    depth : hidden sine layers (reference: 4).
    w0 : frequency factor of every sine layer.
    """

    def __init__(self, coord_dim: int, latent_dim: int, out_channels: int = 1, width: int = 32,
                 depth: int = 4, w0: float = 30.0):
        super().__init__(coord_dim, latent_dim, out_channels)
        self.w0 = float(w0)
        sizes = [self.coord_dim + self.latent_dim, *[width] * depth, self.out_channels]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        with torch.no_grad():
            for i, layer in enumerate(self.layers):
                bound = 1 / layer.in_features if i == 0 else math.sqrt(6 / layer.in_features) / self.w0
                layer.weight.uniform_(-bound, bound)

    def _net(self, alpha: Tensor, x: Tensor) -> Tensor:
        first, d = self.layers[0], self.coord_dim
        # W [x, α] = W_x x + W_α α: the latent part is computed once per sample, not per point
        h = x @ first.weight[:, :d].T + (alpha @ first.weight[:, d:].T + first.bias)
        for layer in self.layers[1:]:
            h = layer(torch.sin(self.w0 * h))
        return h


class HyperDecoder(_Decoder):
    """Multiplicative filter network with latent-modulated biases (the reference's "hyper", DINo).

    ``φ_i(x) = [sin(x Ω_i), cos(x Ω_i)]``; ``h₀ = (b₀ + V₀α) ⊙ φ₀(x)``;
    ``h_i = (W_i h_{i−1} + b_i + V_i α) ⊙ φ_i(x)`` for i = 1..n_layers−1; ``u = W_out h + b_out``.
    Initialisation as the reference: Ω_i (d, width/2) and W_i He-uniform, b₀ U(±1/√d),
    b_i U(±1/√width), V_i U(±1/√k), W_out and b_out U(±1/√width). Products of filters add
    frequencies, so the highest frequency grows with ``n_layers``.

    Parameters
    ----------
    coord_dim, latent_dim, out_channels : d, k, C.
    width : even hidden width (reference: 64 diffusion, 80 NS/KdV).
    n_layers : number of filters (reference: 3).
    """

    def __init__(self, coord_dim: int, latent_dim: int, out_channels: int = 1, width: int = 64,
                 n_layers: int = 3):
        super().__init__(coord_dim, latent_dim, out_channels)
        if width % 2 or n_layers < 1:
            raise ValueError(f"HyperDecoder needs an even width and n_layers ≥ 1, got {width}, {n_layers}")
        d, k, self.width, self.n_layers = self.coord_dim, self.latent_dim, int(width), int(n_layers)
        he = lambda fan_in: math.sqrt(6 / fan_in)  # noqa: E731
        self.omega = nn.Parameter(torch.empty(n_layers, d, width // 2).uniform_(-he(d), he(d)))
        self.weight = nn.Parameter(torch.empty(n_layers - 1, width, width).uniform_(-he(width), he(width)))
        bias = torch.empty(n_layers, width).uniform_(-1 / math.sqrt(width), 1 / math.sqrt(width))
        bias[0].uniform_(-1 / math.sqrt(d), 1 / math.sqrt(d))
        self.bias = nn.Parameter(bias)
        self.modulation = nn.Linear(k, n_layers * width, bias=False)  # all V_i in one matmul
        self.out = nn.Linear(width, self.out_channels)

    def _net(self, alpha: Tensor, x: Tensor) -> Tensor:
        shift = self.modulation(alpha).unflatten(-1, (self.n_layers, self.width)) + self.bias
        h = None
        for i in range(self.n_layers):
            z = x @ self.omega[i]
            filt = torch.cat([torch.sin(z), torch.cos(z)], dim=-1)
            pre = shift[..., i, :] if h is None else h @ self.weight[i - 1].T + shift[..., i, :]
            h = pre * filt
        return self.out(h)


DECODERS = ("mlp", "hyper")


def make_decoder(kind: str, coord_dim: int, latent_dim: int, out_channels: int = 1, width: int = 32,
                 depth: int = 4, w0: float = 1.0) -> _Decoder:
    """A decoder by the reference's name, so that one config entry (``model.net``) serves both.

    ``kind="mlp"``: :class:`SineMLPDecoder` with ``depth`` sine layers of frequency factor ``w0``
    (the reference's Burgers/LBM decoder). ``kind="hyper"``: :class:`HyperDecoder` with ``depth``
    filters (the reference's NS/KdV/diffusion decoder; ``w0`` is unused: its filter frequencies Ω
    are trained). Both take any ``coord_dim``: the MLP's first layer and the filters ``x Ω`` mix
    the coordinate axes linearly, so 2-D points need nothing per axis.
    """
    if kind == "mlp":
        return SineMLPDecoder(coord_dim, latent_dim, out_channels, width=width, depth=depth, w0=w0)
    if kind == "hyper":
        return HyperDecoder(coord_dim, latent_dim, out_channels, width=width, n_layers=depth)
    raise UserError(f"model.net.kind={kind}: choose one of {', '.join(DECODERS)}")


# --- Latent dynamics and time integration ----------
class _Swish(nn.Module):
    """``x · sigmoid(x · softplus(β)) / 1.1`` with a trainable scalar β (reference init 0.5)."""

    def __init__(self):
        super().__init__()
        self.beta = nn.Parameter(torch.tensor(0.5))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(x * nn.functional.softplus(self.beta)) / 1.1


class LatentDynamics(nn.Module):
    """Ψ: α̇ = Ψ(α) or Ψ(α, μ): (B, k) [, (B, p)] -> (B, k).

    ``depth`` hidden layers of ``width`` with trainable swish, linear output. With
    ``param_dim > 0`` the input is ``[α, A μ̃ + c]`` (the reference's "hyper_concat"), μ̃ the
    parameters standardised by buffers set with :meth:`set_param_normalization` (physical μ are
    often tiny, e.g. Burgers' 0.015–0.03, and would barely reach the network otherwise).
    """

    def __init__(self, latent_dim: int, width: int = 64, depth: int = 4, param_dim: int = 0):
        super().__init__()
        self.latent_dim, self.param_dim = int(latent_dim), int(param_dim)
        self.param_map = nn.Linear(param_dim, latent_dim) if param_dim > 0 else None
        self.register_buffer("param_mean", torch.zeros(max(param_dim, 0)))
        self.register_buffer("param_std", torch.ones(max(param_dim, 0)))
        sizes = [latent_dim * (2 if param_dim > 0 else 1)] + [width] * depth
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), _Swish()]
        self.net = nn.Sequential(*layers, nn.Linear(sizes[-1], latent_dim))

    @torch.no_grad()
    def set_param_normalization(self, mean, std) -> None:
        """μ̃ = (μ − mean) / std: mean, std scalars or (p,)."""
        self.param_mean.copy_(torch.as_tensor(mean, dtype=self.param_mean.dtype).expand(self.param_dim))
        self.param_std.copy_(torch.as_tensor(std, dtype=self.param_std.dtype).expand(self.param_dim))

    def forward(self, alpha: Tensor, mu: Tensor | None = None) -> Tensor:
        if self.param_map is None:
            return self.net(alpha)
        if mu is None or mu.shape[-1] != self.param_dim:
            raise ValueError(f"LatentDynamics(param_dim={self.param_dim}) needs mu (B, {self.param_dim}), "
                             f"got {None if mu is None else tuple(mu.shape)}")
        mu = self.param_map((mu - self.param_mean) / self.param_std).expand_as(alpha)
        return self.net(torch.cat([alpha, mu], dim=-1))


def bosh3_step(f: Callable[[Tensor], Tensor], a: Tensor, dt: float) -> Tensor:
    """One fixed Bogacki–Shampine 3(2) step of ``ȧ = f(a)``, third-order solution (as Diffrax).

    Fixed steps, so the embedded second-order error estimate is not formed. For ``Ψ(α, μ)`` pass
    ``lambda a: psi(a, mu)``.
    """
    k1 = f(a)
    k2 = f(a + 0.5 * dt * k1)
    k3 = f(a + 0.75 * dt * k2)
    return a + dt * (2 / 9 * k1 + 1 / 3 * k2 + 4 / 9 * k3)


def rollout(f: Callable[[Tensor], Tensor], a0: Tensor, n_steps: int, dt: float,
            substeps: int = 1) -> Tensor:
    """Integrate ``ȧ = f(a)`` from a0 (B, k): (B, n_steps + 1, k), the first entry a0.

    Each of the ``n_steps`` outputs is ``substeps`` Bosh3 steps of ``dt / substeps`` apart.
    """
    if n_steps < 0 or substeps < 1:
        raise ValueError(f"need n_steps ≥ 0 and substeps ≥ 1, got {n_steps}, {substeps}")
    h, out, a = dt / substeps, [a0], a0
    for _ in range(n_steps):
        for _ in range(substeps):
            a = bosh3_step(f, a, h)
        out.append(a)
    return torch.stack(out, dim=1)


# --- Solver-informed latent velocity ----------
class LatentVelocity(NamedTuple):
    """velocity (B, k); finite (B,) bool, False where any entry is NaN/inf; n_nonfinite () long."""

    velocity: Tensor
    finite: Tensor
    n_nonfinite: Tensor


def latent_velocity(decoder: nn.Module, alpha: Tensor, x: Tensor, r: Tensor,
                    ridge: float = 0.0) -> LatentVelocity:
    """α̇* = argmin_a ‖J a − r‖ (or ‖J a − r‖² + ridge‖a‖²), J = ∂D(α, x)/∂α, per sample.

    J (B, P·C, k) is built by forward-mode differentiation (``vmap(jacfwd)``: k tangents per
    sample instead of P·C reverse passes) and the system is solved by a thin QR,
    ``R a = Qᵀ r``. Everything is differentiable: gradients reach the decoder parameters, alpha
    and r. With ``ridge > 0`` the stacked system ``[J; √ridge I] a = [r; 0]`` is solved
    (Tikhonov), which also admits P·C < k. In float32, keep TF32 off on GPUs
    (``torch.backends.cuda.matmul.allow_tf32 = False``): the solve is precision-sensitive.

    Parameters
    ----------
    decoder : a decoder of this module (any ``decoder(alpha, x) -> (B, P, C)`` works).
    alpha : (B, k) latents.
    x : (P, d) shared or (B, P, d) per-sample points, e.g. a :func:`random_subset` of the grid.
    r : (B, P, C) field time derivative at x; cast to J's dtype (solvers often return float64).
    ridge : Tikhonov weight λ ≥ 0.

    Returns
    -------
    :class:`LatentVelocity` (velocity, finite, n_nonfinite). A rank-deficient J gives non-finite
    rows; masking them out of the loss does not clean the gradient (0·inf in the QR backward), so
    log ``n_nonfinite`` and zero non-finite gradients (as the reference does) or use ``ridge``.
    """
    B, k = alpha.shape
    P, C = x.shape[-2], r.shape[-1]
    if r.shape != (B, P, C):
        raise ValueError(f"r must be (B, P, C) = ({B}, {P}, C) to match alpha and x, got {tuple(r.shape)}")
    if P * C < k and not ridge > 0:
        raise ValueError(f"latent_velocity: {P} points × {C} channels = {P * C} equations cannot fix "
                         f"{k} latent velocities; sample at least {math.ceil(k / C)} points "
                         f"(random_subset(..., min_points=k)) or pass ridge > 0")
    if ridge < 0:
        raise ValueError(f"ridge must be ≥ 0, got {ridge}")
    jac = vmap(jacfwd(lambda a, xx: decoder(a, xx).reshape(-1)), in_dims=(0, 0 if x.dim() == 3 else None))
    J = jac(alpha, x)                                            # (B, P·C, k)
    rhs = r.reshape(B, P * C).to(J.dtype)
    if ridge > 0:
        eye = math.sqrt(ridge) * torch.eye(k, dtype=J.dtype, device=J.device)
        J = torch.cat([J, eye.expand(B, k, k)], dim=1)
        rhs = torch.cat([rhs, rhs.new_zeros(B, k)], dim=1)
    Q, R = torch.linalg.qr(J, mode="reduced")
    v = torch.linalg.solve_triangular(R, Q.transpose(-1, -2) @ rhs[..., None], upper=True)[..., 0]
    finite = torch.isfinite(v).all(-1).detach()
    return LatentVelocity(v, finite, (~finite).sum())


def random_subset(n_points: int, fraction: float, batch: int, generator: torch.Generator | None = None,
                  min_points: int = 1, device=None) -> Tensor:
    """Distinct random point indices per sample (stochastic hyper-reduction): (batch, m) long.

    ``m = min(n_points, max(ceil(fraction · n_points), min_points))``; pass ``min_points = ⌈k/C⌉``
    (or k) so that :func:`latent_velocity` stays over-determined. Resample every step.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if min_points > n_points:
        raise ValueError(f"cannot draw min_points={min_points} distinct points out of {n_points}")
    m = min(n_points, max(math.ceil(fraction * n_points), int(min_points)))
    device = device if device is not None else (generator.device if generator is not None else None)
    keys = torch.rand(batch, n_points, generator=generator, device=device)
    return keys.argsort(dim=-1)[:, :m]


def gather_points(values: Tensor, idx: Tensor) -> Tensor:
    """Per-sample points: values (B, P, ...), idx (B, m) -> (B, m, ...).

    For coordinates shared by all samples, ``x[idx]`` ((P, d) -> (B, m, d)) does the same.
    """
    return values[torch.arange(idx.shape[0], device=idx.device)[:, None], idx]


# --- Inference: latent inversion ----------
def fit_latent(decoder: nn.Module, u: Tensor, x: Tensor, steps: int = 1000, lr: float = 0.1,
               init: Tensor | None = None) -> Tensor:
    """α = argmin ‖D(α, x) − u‖² per sample by Adam, keeping each sample's best iterate (§2.4).

    The decoder is frozen: only α is differentiated (``autograd.grad``), so no ``.grad`` is
    accumulated in its parameters. Each sample's loss is its own MSE and Adam acts element-wise,
    so the samples are fitted independently. Works in ``no_grad``/``inference_mode`` contexts
    (prediction loops) and from any point set, e.g. a sparse subset of the grid. The problem is
    non-convex: with :class:`SineMLPDecoder` (w0 = 30) lr 0.1 jumps between basins even from a
    warm start; there use a smaller lr and a warm ``init`` (e.g. the previous latent).

    Parameters
    ----------
    u : (B, P, C) observed field at x.
    x : (P, d) or (B, P, d) points, scaled like the training coordinates.
    steps, lr : Adam iterations and step size (reference: 1000, 0.1).
    init : (B, k) starting latents (default zeros, the latent memory's initial value).

    Returns
    -------
    (B, k) detached latents with the smallest MSE seen.
    """
    with torch.inference_mode(False), torch.enable_grad():
        u, x = u.detach().clone(), x.detach().clone()  # clone: inference tensors cannot enter autograd
        B = u.shape[0]
        alpha = (u.new_zeros(B, decoder.latent_dim) if init is None else init.detach().clone().to(u))
        alpha.requires_grad_(True)
        opt = torch.optim.Adam([alpha], lr=lr)
        best, best_err = alpha.detach().clone(), u.new_full((B,), math.inf)
        for step in range(steps + 1):
            err = ((decoder(alpha, x) - u) ** 2).flatten(1).mean(1)
            better = err.detach() < best_err  # NaN never compares smaller: NaN iterates are skipped
            best_err = torch.where(better, err.detach(), best_err)
            best = torch.where(better[:, None], alpha.detach(), best)
            if step == steps:
                break
            (alpha.grad,) = torch.autograd.grad(err.sum(), alpha)
            opt.step()
    return best


# --- Losses ----------
def relative_l2(pred: Tensor, target: Tensor) -> Tensor:
    """‖pred − target‖ / ‖target‖ per sample over points and channels: (B, ...) -> (B,).

    The reference's "nmse"; its batch mean is L_rec. Same as :func:`neuropde.losses.rel_l2`.
    """
    return rel_l2(pred, target, reduce=False)


def dynamics_loss(psi_alpha: Tensor, alpha_dot_star: Tensor) -> Tensor:
    """L_dyn = mean_b ‖Ψ_b − α̇*_b‖ / ‖stopgrad(α̇*_b)‖: (B, k), (B, k) -> ().

    The numerator's gradient reaches Ψ and, through α̇*, the solver, the decoder and the latents;
    the detached denominator only rescales each sample.
    """
    num = torch.linalg.vector_norm(psi_alpha - alpha_dot_star, dim=-1)
    return (num / torch.linalg.vector_norm(alpha_dot_star.detach(), dim=-1)).mean()
