"""2D incompressible Navier–Stokes in vorticity form on the periodic square ``[0, L)²``.

    ∂ₜω + u·∇ω = νΔω + f,    u = ∇^⊥ψ = (∂_yψ, −∂_xψ),    −Δψ = ω,

so ``ω = ∂_x v − ∂_y u``. Pseudo-spectral in space (2/3-rule dealiasing of the advection) and
IMEX in time: viscosity implicit (Crank–Nicolson within each stage), advection and forcing
explicit (the 3-stage low-storage Runge–Kutta of Spalart, Moser & Rogers 1991). The combined
scheme is second order in time (the explicit part alone is third order), which the tests measure.

Grid and spectral conventions are those of :mod:`neuropde.pde.spectral`; the spectral state is
``torch.fft.rfft2(ω)`` with the default (unnormalised) scaling, shaped ``(B, n, n // 2 + 1)``.

Without autograd, :meth:`NavierStokes2D.step` and :meth:`~NavierStokes2D.simulate` take a fused path
(2-5x faster on CPU): stage coefficients precomputed for each ``dt``, the state in a k_y-major
layout, k_x transforms only on the columns the 2/3 rule keeps, pointwise work in place, and (CPU)
the nonlinear term in cache-sized chunks of the batch; :meth:`~NavierStokes2D.stepper` adds
CUDA-graph replay. It computes the same scheme, equal to rounding, as the differentiable path,
which is used whenever the state requires grad.

Initial conditions draw their random Fourier coefficients on a fixed set of wavenumbers that does
not depend on the grid, so a seed gives the same physical field at every resolution.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from neuropde.pde.spectral import dealias_mask, wavenumbers

__all__ = [
    "NavierStokes2D", "fno_forcing", "kolmogorov_forcing", "make_forcing",
    "gaussian_random_field", "mcwilliams_vorticity",
]

# Spalart–Moser–Rogers RK3/CN stages (α, β, γ, ζ):
#   ω_k = ω_{k-1} + dt [α_k Lω_{k-1} + β_k Lω_k + γ_k N_{k-1} + ζ_k N_{k-2}],  L = νΔ, N = −u·∇ω + f.
# α_k + β_k = γ_k + ζ_k is the stage's share of dt (8/15, 2/15, 1/3). Only one old N is kept.
_RK3_CN = (
    (4 / 15, 4 / 15, 8 / 15, 0.0),
    (1 / 15, 1 / 15, 5 / 12, -17 / 60),
    (1 / 6, 1 / 6, 3 / 4, -5 / 12),
)


def _grid(n: int, L: float, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinates ``x_i = i L / n``: x (n, 1), y (1, n)."""
    x = torch.arange(n, dtype=dtype, device=device) * (L / n)
    return x[:, None], x[None, :]


class NavierStokes2D(nn.Module):
    """Batched pseudo-spectral solver for 2D vorticity on ``[0, L)²``.

    An ``nn.Module`` only so that ``.to(device)`` moves its spectral buffers; it has no parameters.
    ``forward`` is :meth:`time_derivative`.

    Parameters
    ----------
    n : grid points per side.
    L : domain side.
    nu : kinematic viscosity.
    forcing : None or Tensor (n, n) or (B, n, n), physical-space vorticity forcing ``f`` (constant in
        time); a batch of forcings drives a batch of B fields, one each.
    dealias : apply the 2/3 rule to the advection term.
    dtype : float32 or float64; inputs are cast to it.
    device : where the buffers live; inputs are moved there.
    """

    def __init__(self, n: int, L: float = 1.0, nu: float = 1e-3, forcing: torch.Tensor | None = None,
                 dealias: bool = True, dtype=torch.float64, device="cpu"):
        super().__init__()
        self.n, self.L, self.nu = int(n), float(L), float(nu)
        kx, ky = wavenumbers(n, L, zero_nyquist=True, dtype=dtype, device=device)
        kxf, kyf = wavenumbers(n, L, dtype=dtype, device=device)
        k2 = kxf ** 2 + kyf ** 2  # (n, n//2+1); the Laplacian keeps the Nyquist modes
        mask = dealias_mask(n, device=device) if dealias else torch.ones_like(k2, dtype=torch.bool)
        self.register_buffer("kx", kx, persistent=False)  # (n, 1), Nyquist zeroed for ∂
        self.register_buffer("ky", ky, persistent=False)  # (1, n//2+1)
        self.register_buffer("k2", k2, persistent=False)
        self.register_buffer("inv_k2", torch.where(k2 > 0, 1 / torch.where(k2 > 0, k2, 1.0), 0.0),
                             persistent=False)
        self.register_buffer("mask", mask.to(dtype), persistent=False)
        # the 2/3 rule keeps k_y < n/3: the first `_cols` columns of the rfft2 layout
        self._cols = int(mask.any(0).sum()) if dealias else n // 2 + 1
        self._fast: dict = {}  # derived tensors of the fused path, rebuilt after .to()
        if forcing is not None:
            if forcing.dim() not in (2, 3) or tuple(forcing.shape[-2:]) != (n, n):
                raise ValueError(f"forcing must be ({n}, {n}) or (B, {n}, {n}), got {tuple(forcing.shape)}")
            # stored as real pairs: Module.to(dtype) then casts it like the other buffers
            f_hat = torch.view_as_real(torch.fft.rfft2(forcing.to(device=device, dtype=dtype)))
            self.register_buffer("f_hat", f_hat, persistent=False)
        else:
            self.register_buffer("f_hat", None, persistent=False)

    # --- conversions ---------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.k2.dtype

    @property
    def device(self) -> torch.device:
        return self.k2.device

    def to_spectral(self, w: torch.Tensor) -> torch.Tensor:
        """Physical (..., n, n) -> spectral (..., n, n // 2 + 1), cast to the solver's dtype/device."""
        return torch.fft.rfft2(w.to(device=self.device, dtype=self.dtype))

    def to_physical(self, w_hat: torch.Tensor) -> torch.Tensor:
        """Spectral (..., n, n // 2 + 1) -> physical (..., n, n)."""
        return torch.fft.irfft2(w_hat, s=(self.n, self.n))

    # --- right-hand side -----------------------------------------------------------------------
    def _i(self, k: torch.Tensor) -> torch.Tensor:
        return torch.complex(torch.zeros_like(k), k)

    def _velocity_hat(self, w_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        psi_hat = w_hat * self.inv_k2  # −Δψ = ω
        return self._i(self.ky) * psi_hat, -self._i(self.kx) * psi_hat

    def _advection_hat(self, w_hat: torch.Tensor) -> torch.Tensor:
        """Spectrum of the dealiased ``u·∇ω``: (..., n, n//2+1) -> same."""
        w_hat = w_hat * self.mask  # band-limit the factors so the product aliases only outside it
        u_hat, v_hat = self._velocity_hat(w_hat)
        # one batched inverse FFT for the four factors
        u, v, wx, wy = self.to_physical(torch.stack(
            [u_hat, v_hat, self._i(self.kx) * w_hat, self._i(self.ky) * w_hat])).unbind(0)
        return torch.fft.rfft2(u * wx + v * wy) * self.mask

    def _explicit_hat(self, w_hat: torch.Tensor) -> torch.Tensor:
        """Spectrum of the explicit part ``−u·∇ω + f``."""
        n_hat = -self._advection_hat(w_hat)
        if self.f_hat is not None:
            n_hat = n_hat + torch.view_as_complex(self.f_hat)
        return n_hat

    def velocity(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Velocity ``(u, v) = (∂_yψ, −∂_xψ)`` of vorticity (..., n, n); each (..., n, n)."""
        u_hat, v_hat = self._velocity_hat(self.to_spectral(w))
        return self.to_physical(u_hat), self.to_physical(v_hat)

    def advection(self, w: torch.Tensor) -> torch.Tensor:
        """Dealiased ``u·∇ω`` of vorticity (..., n, n) -> (..., n, n)."""
        return self.to_physical(self._advection_hat(self.to_spectral(w)))

    def time_derivative(self, w: torch.Tensor) -> torch.Tensor:
        """``∂ₜω = −u·∇ω + νΔω + f`` of vorticity (..., n, n) -> (..., n, n); differentiable."""
        w_hat = self.to_spectral(w)
        return self.to_physical(self._explicit_hat(w_hat) - self.nu * self.k2 * w_hat)

    forward = time_derivative

    def kinetic_energy(self, w: torch.Tensor) -> torch.Tensor:
        """Mean kinetic energy ``½⟨|u|²⟩`` of vorticity (..., n, n) -> (...)."""
        u, v = self.velocity(w)
        return 0.5 * (u ** 2 + v ** 2).mean(dim=(-2, -1))

    def enstrophy(self, w: torch.Tensor) -> torch.Tensor:
        """Mean enstrophy ``½⟨ω²⟩`` of vorticity (..., n, n) -> (...)."""
        return 0.5 * (w.to(self.dtype) ** 2).mean(dim=(-2, -1))

    # --- time stepping -------------------------------------------------------------------------
    def step(self, w_hat: torch.Tensor, dt: float) -> torch.Tensor:
        """Advance the spectral state by ``dt`` with RK3/CN (second order).

        Differentiable when ``w_hat`` requires grad; otherwise the fused path (same scheme).

        Parameters
        ----------
        w_hat : Tensor (B, n, n // 2 + 1), complex, in the solver's precision.
        dt : time step.

        Returns
        -------
        Tensor (B, n, n // 2 + 1).
        """
        if self._can_fuse(w_hat):
            w_t = self._transposed(w_hat)
            self._advance_(w_t, float(dt), self._workspace(w_t.shape[0]))
            return w_t.transpose(-1, -2).reshape(w_hat.shape).contiguous()
        return self._step_autograd(w_hat, dt)

    def _step_autograd(self, w_hat: torch.Tensor, dt: float) -> torch.Tensor:
        """The scheme written with out-of-place tensor ops (autograd-friendly reference)."""
        lin = -self.nu * self.k2  # the diagonal viscous operator νΔ
        n_old = None
        for a, b, g, z in _RK3_CN:
            n_new = self._explicit_hat(w_hat)
            rhs = w_hat + dt * (a * lin * w_hat + g * n_new)
            if z:
                rhs = rhs + (dt * z) * n_old
            w_hat = rhs / (1 - (dt * b) * lin)
            n_old = n_new
        return w_hat

    # --- fused stepping (no autograd) ------------------------------------------------------------
    def _can_fuse(self, w_hat: torch.Tensor) -> bool:
        if torch.is_grad_enabled() and w_hat.requires_grad:
            return False
        if w_hat.dim() < 2 or w_hat.dtype != self._complex_dtype or w_hat.device != self.device:
            return False
        if tuple(w_hat.shape[-2:]) != (self.n, self.n // 2 + 1):
            return False
        if self.f_hat is not None and self.f_hat.dim() == 4:  # a batch of forcings, one per field
            return w_hat.dim() == 3 and w_hat.shape[0] == self.f_hat.shape[0]
        return True

    @staticmethod
    def _transposed(w_hat: torch.Tensor) -> torch.Tensor:
        """A contiguous copy of the state in the fused path's layout (B, n // 2 + 1, n): k_y-major, so
        that the kept columns are one block per field and the k_x transforms run along rows."""
        # clone, not .contiguous(): the transpose of a transposed view is contiguous already
        return w_hat.reshape(-1, *w_hat.shape[-2:]).transpose(-1, -2).clone(memory_format=torch.contiguous_format)

    @property
    def _complex_dtype(self) -> torch.dtype:
        return torch.complex128 if self.dtype == torch.float64 else torch.complex64

    def _consts(self) -> dict:
        """dt-independent tensors of the fused path, for the current dtype and device."""
        key = (self.dtype, self.device)
        if self._fast.get("key") != key:
            c = self._cols
            i = torch.complex(torch.zeros((), dtype=self.dtype, device=self.device),
                              torch.ones((), dtype=self.dtype, device=self.device))
            kx, ky, inv_k2, mask = self.kx, self.ky, self.inv_k2, self.mask
            # ω̂ ↦ (û, v̂, ∂̂_xω, ∂̂_yω) of the band-limited ω; stored (4, cols, n) for _nonlinear
            fac = torch.stack([i * ky * inv_k2 * mask, -i * kx * inv_k2 * mask,
                               (i * kx * mask).expand_as(mask), (i * ky * mask).expand_as(mask)])
            self._fast = {"key": key, "fac_t": fac[..., :c].transpose(-1, -2).contiguous(), "coef": {},
                          "ws": None}
        return self._fast

    def _coefficients(self, dt: float) -> list[tuple]:
        """Per stage (A, G, Z, F): ``ω ← A ω + G N + Z N_old + F`` in the fused path's k_y-major
        layout, with N = FFT(u·∇ω) on the kept k_y (unmasked), so G and Z carry −dt·γ, −dt·ζ, the mask
        and the CN denominator, and F the forcing's dt·(γ+ζ)·f̂. All act on view_as_real tensors:
        A (m, n, 2), G and Z (cols, n, 2), F (m, n, 2) or (B, m, n, 2), m = n // 2 + 1."""
        cache = self._consts()["coef"]
        if dt not in cache:
            if len(cache) >= 8:
                cache.clear()
            c = self._cols
            lin = -self.nu * self.k2.double().T
            mask = self.mask.double().T[:c]
            f_hat = None if self.f_hat is None else torch.view_as_complex(self.f_hat.double()).transpose(-1, -2)
            # repeated over (re, im) rather than broadcast from (..., 1): a stride-0 innermost
            # dimension stops vectorisation (measured 10x slower on CPU)
            real = lambda t: t.to(self.dtype)[..., None].expand(*t.shape, 2).contiguous()
            stages = []
            for a, b, g, z in _RK3_CN:
                d = 1 / (1 - (dt * b) * lin)
                A = real((1 + (dt * a) * lin) * d)
                G = real(-dt * g * d[:c] * mask)
                Z = real(-dt * z * d[:c] * mask) if z else None
                F = None if f_hat is None else torch.view_as_real(
                    ((dt * (g + z)) * d * f_hat).to(self._complex_dtype).contiguous())
                stages.append((A, G, Z, F))
            cache[dt] = stages
        return cache[dt]

    def _chunk(self, batch: int) -> int:
        """Fields per nonlinear-term chunk: all on GPU; on CPU about 1 MiB of physical factors,
        which measured 1.1x (64 x 64²) to 1.4x (8 x 256²) faster than the whole batch at once."""
        if self.device.type != "cpu":
            return batch
        per_field = 4 * self.n * self.n * torch.finfo(self.dtype).bits // 8
        return max(1, min(batch, (1 << 20) // per_field))

    def _workspace(self, batch: int, private: bool = False) -> dict:
        """Buffers for a batch of ``batch`` fields; the shared one is kept until the batch changes.

        Only pointwise results go to buffers: FFTs allocate their outputs, because an FFT with
        ``out=`` computes into a temporary and copies (measured)."""
        consts = self._consts()
        ws = consts["ws"]
        if private or ws is None or ws["batch"] != batch:
            n, m, c, b = self.n, self.n // 2 + 1, self._cols, self._chunk(batch)
            cd, kw = self._complex_dtype, {"device": self.device}
            ws = {"batch": batch, "chunk": b, "block": 32 if self.device.type == "cpu" else c,
                  "fac_t": consts["fac_t"],  # held: a CUDA graph reads it
                  "fac_in": torch.empty(b, 4, c, n, dtype=cd, **kw),
                  "spec": torch.zeros(b, 4, n, m, dtype=cd, **kw),  # columns ≥ cols stay zero
                  "prod": torch.empty(b, n, n, dtype=self.dtype, **kw)}
            if not private:
                consts["ws"] = ws
        return ws

    def _nonlinear(self, w_t: torch.Tensor, ws: dict) -> list[tuple[int, int, torch.Tensor]]:
        """FFT(u·∇ω) of the state w_t (B, m, n) (k_y-major) on the kept k_y, unmasked, per chunk of
        the batch: a list of (start, stop, Tensor (stop - start, cols, n))."""
        n, c, b = self.n, self._cols, ws["chunk"]
        fac_t = ws["fac_t"]
        out = []
        for s in range(0, w_t.shape[0], b):
            e = min(s + b, w_t.shape[0])
            fac_in, spec, prod = (ws[name][: e - s] for name in ("fac_in", "spec", "prod"))
            # the four factor spectra on the kept k_y; their k_x transform runs along rows, then
            # one transposing copy puts k_y last for the real transform
            torch.mul(w_t[s:e, None, :c], fac_t, out=fac_in)
            t = torch.fft.ifft(fac_in, dim=-1)
            for j in range(0, c, ws["block"]):  # on CPU in cache-sized blocks: 2x faster at 256²
                k = min(j + ws["block"], c)
                spec[..., j:k].copy_(t[..., j:k, :].transpose(-1, -2))
            phys = torch.fft.irfft(spec, n=n, dim=-1)  # (k, 4, n, n): u, v, ∂_xω, ∂_yω
            torch.mul(phys[:, 0], phys[:, 2], out=prod)
            prod.addcmul_(phys[:, 1], phys[:, 3])
            half = torch.fft.rfft(prod, dim=-1)[..., :c].transpose(-1, -2)
            out.append((s, e, torch.fft.fft(half, dim=-1)))
        return out

    def _advance_(self, w_t: torch.Tensor, dt: float, ws: dict, steps: int = 1,
                  coefs: list | None = None) -> torch.Tensor:
        """Advance the contiguous k_y-major state w_t (B, m, n) in place by ``steps`` steps of ``dt``."""
        coefs = self._coefficients(dt) if coefs is None else coefs
        wr = torch.view_as_real(w_t)
        wk = wr[:, : self._cols]
        with torch.no_grad():
            for _ in range(steps):
                old = None
                for A, G, Z, F in coefs:
                    new = self._nonlinear(w_t, ws)
                    if F is None:
                        wr.mul_(A)
                    else:
                        torch.addcmul(F, wr, A, out=wr)
                    for i, (s, e, n_new) in enumerate(new):
                        wk[s:e].addcmul_(torch.view_as_real(n_new), G)
                        if Z is not None:
                            wk[s:e].addcmul_(torch.view_as_real(old[i][2]), Z)
                    old = new
        return w_t

    def stepper(self, w_hat: torch.Tensor, dt: float, steps: int = 1,
                cuda_graph: bool | None = None):
        """A state and a function that advances it in place by ``steps`` steps of ``dt``.

        For repeated stepping at one ``dt`` (benchmarks, long solves). The state is a copy of
        ``w_hat`` with its own work buffers; on CUDA (``cuda_graph`` None or True) the steps are
        captured once as a CUDA graph and each call replays it, which removes per-kernel launch
        cost. ``cuda_graph=False`` (and CPU) runs the fused eager steps.

        Parameters
        ----------
        w_hat : Tensor (B, n, n // 2 + 1), complex, in the solver's precision and device.
        dt : time step.
        steps : steps per call.
        cuda_graph : capture a CUDA graph (default: on CUDA devices); True on CPU is an error.

        Returns
        -------
        (state, advance) : the state Tensor (B, n, n // 2 + 1) (a transposed view of the contiguous
        k_y-major buffer the steps work on), updated in place by ``advance()``.
        """
        if w_hat.dim() != 3 or not self._can_fuse(w_hat.detach()):
            raise ValueError(f"w_hat must be (B, {self.n}, {self.n // 2 + 1}) {self._complex_dtype} on "
                             f"{self.device} (a batch of forcings: B equal to it), got "
                             f"{tuple(w_hat.shape)} {w_hat.dtype} on {w_hat.device}")
        graph = self.device.type == "cuda" if cuda_graph is None else bool(cuda_graph)
        if graph and self.device.type != "cuda":
            raise ValueError("cuda_graph=True needs the solver on a CUDA device")
        state_t = self._transposed(w_hat.detach())
        state = state_t.transpose(-1, -2)  # the caller's view, (B, n, m)
        ws, coefs, dt = self._workspace(state.shape[0], private=True), self._coefficients(float(dt)), float(dt)

        def run():
            self._advance_(state_t, dt, ws, steps, coefs)

        if not graph:
            return state, run
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm-up off the capture: cuFFT plans, allocator
            run()
        torch.cuda.current_stream(self.device).wait_stream(side)
        state.copy_(w_hat.detach())
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            run()
        return state, g.replay

    def simulate(self, w0: torch.Tensor, dt: float, record_times: Sequence[float] | torch.Tensor | float,
                 progress: bool | Callable[[float], None] = False) -> torch.Tensor:
        """Integrate from ``t = 0`` and record ω at the requested times.

        Each interval between consecutive record times is split into the fewest equal steps no
        longer than ``dt``, so every record time is hit exactly and the step never overshoots.

        Parameters
        ----------
        w0 : Tensor (B, n, n), initial vorticity.
        dt : largest time step.
        record_times : non-decreasing times ``≥ 0`` (T of them); ``0`` records ``w0``.
        progress : show a tqdm bar over steps; or a callable, called with the fraction of the steps
            done (a data set generator's bar, moving within a shard).

        Returns
        -------
        Tensor (B, T, n, n) in the solver's dtype, on its device.
        """
        if dt <= 0:
            raise ValueError(f"dt must be positive, got {dt}")
        times = torch.as_tensor(record_times, dtype=torch.float64).reshape(-1).tolist()
        if any(t < 0 for t in times) or any(b < a for a, b in zip(times, times[1:])):
            raise ValueError("record_times must be non-negative and non-decreasing")
        plan, t0 = [], 0.0
        for t in times:
            # the tolerance keeps e.g. 0.3 / 0.1 = 3.0000000000000004 at 3 steps
            m = max(math.ceil((t - t0) / dt - 1e-9), 0)
            plan.append((m, (t - t0) / m if m else 0.0))
            t0 = t
        w_hat = self.to_spectral(w0)
        fused = self._can_fuse(w_hat)
        if fused:  # one private k_y-major copy stepped in place
            w_t = self._transposed(w_hat)
            ws = self._workspace(w_t.shape[0])
        frames = []
        total = sum(m for m, _ in plan)
        report = progress if callable(progress) else None
        done = 0
        with tqdm(total=total, disable=report is not None or not progress, desc="NS") as bar:
            for m, h in plan:
                for _ in range(m):
                    if fused:
                        self._advance_(w_t, h, ws)
                    else:
                        w_hat = self._step_autograd(w_hat, h)
                    bar.update()
                    done += 1
                    if report is not None and done % 64 == 0:  # one call per 64 steps
                        report(done / total)
                state = w_t.transpose(-1, -2) if fused else w_hat
                frames.append(self.to_physical(state).reshape(*w0.shape[:-2], self.n, self.n))
        return torch.stack(frames, dim=-3)


# --- forcings (physical (n, n) tensors) ------------------------------------------------------------
def fno_forcing(n: int, L: float = 1.0, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """Forcing of the FNO Navier–Stokes benchmark, ``0.1 (sin 2π(x+y)/L + cos 2π(x+y)/L)``: (n, n)."""
    x, y = _grid(n, L, dtype, device)
    phase = 2 * math.pi * (x + y) / L
    return 0.1 * (torch.sin(phase) + torch.cos(phase))


def kolmogorov_forcing(n: int, L: float = 2 * math.pi, k: int = 4, amplitude: float = 1.0, *,
                       dtype=torch.float64, device=None) -> torch.Tensor:
    """Vorticity of the Kolmogorov body force ``F = amplitude · sin(κ y) e_x``, ``κ = 2πk/L``.

    With ``ω = ∂_x v − ∂_y u`` the forcing is ``curl F = −∂_y F_x = −amplitude · κ · cos(κ y)``.

    Returns
    -------
    Tensor (n, n), constant along x.
    """
    x, y = _grid(n, L, dtype, device)
    kappa = 2 * math.pi * k / L
    return (-amplitude * kappa * torch.cos(kappa * y)).expand(n, n).clone()


def make_forcing(name: str, n: int, L: float = 1.0, **kwargs) -> torch.Tensor | None:
    """Forcing by name: ``"fno"``, ``"kolmogorov"`` (kwargs: k, amplitude, dtype, device) or ``"none"``."""
    if name == "fno":
        return fno_forcing(n, L, **kwargs)
    if name == "kolmogorov":
        return kolmogorov_forcing(n, L, **kwargs)
    if name == "none":
        return None
    raise ValueError(f"unknown forcing {name!r}; choose fno, kolmogorov or none")


# --- random initial conditions -------------------------------------------------------------------
def _reference_noise(batch: int, M: int, generator: torch.Generator | None) -> torch.Tensor:
    """Complex normal noise (real and imaginary parts standard normal) on the reference modes.

    Layout like rfft2 on a virtual ``2M-1`` grid: rows ``k_x = 0..M-1, -(M-1)..-1``, columns
    ``k_y = 0..M-1``, shape (batch, 2M-1, M), complex128 on CPU. The ``k_y = 0`` column is made
    Hermitian (``z(-k_x) = conj z(k_x)``) so the field is real, and the mean mode is zero.
    """
    z = torch.view_as_complex(torch.randn(batch, 2 * M - 1, M, 2, generator=generator,
                                          dtype=torch.float64, device="cpu"))
    z[:, M:, 0] = z[:, 1:M, 0].flip(-1).conj()
    z[:, 0, 0] = 0
    return z


def _reference_modes(M: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer wavenumbers of the reference layout: kx (2M-1, 1), ky (1, M), float64."""
    kx = torch.cat([torch.arange(M), torch.arange(-(M - 1), 0)]).double()
    return kx[:, None], torch.arange(M).double()[None, :]


def _embed(coef: torch.Tensor, n: int, dtype, device) -> torch.Tensor:
    """Put reference coefficients (``norm="forward"`` amplitudes) on an n-grid; return the field.

    Only modes ``|k| < n/2`` are used (the Nyquist mode is left empty), so the coarse field is
    the exact low-pass of any finer one. coef (B, 2M-1, M) -> Tensor (B, n, n).
    """
    M = coef.shape[-1]
    K = min(M - 1, (n - 1) // 2)
    spec = coef.new_zeros(coef.shape[0], n, n // 2 + 1)
    spec[:, : K + 1, : K + 1] = coef[:, : K + 1, : K + 1]
    if K > 0:
        spec[:, n - K:, : K + 1] = coef[:, 2 * M - 1 - K:, : K + 1]
    # inverse FFT on CPU in float64 so the field does not depend on the target device
    return torch.fft.irfft2(spec, s=(n, n), norm="forward").to(device=device, dtype=dtype)


def gaussian_random_field(batch: int, n: int, L: float = 1.0, alpha: float = 2.5, tau: float = 7.0,
                          generator: torch.Generator | None = None, ref_modes: int = 64, *,
                          dtype=torch.float64, device="cpu") -> torch.Tensor:
    """Zero-mean Gaussian random field with covariance ``∝ (−Δ + τ²)^(−α)``, FNO normalisation.

    Fourier amplitudes (``field = Σ_k a_k e^{2πi k·x/L}``) are ``a_k = σ λ_k^(−α/2) z_k`` with
    ``λ_k = 4π²|k|²/L² + τ²``, ``σ = τ^(α−1)`` and ``z_k`` complex normal with ``E|z|² = 2``,
    Hermitian. For ``L = 1`` this has the statistics of the FNO benchmark's field (coefficients
    ``n²√2 σ λ^(−α/2)`` times complex normals, real part of the inverse FFT).

    Parameters
    ----------
    batch, n : number of fields, points per side.
    L, alpha, tau : domain side, smoothness, inverse length scale.
    generator : CPU ``torch.Generator``; coefficients are drawn from it on CPU in float64.
    ref_modes : coefficients are drawn for ``|k_x|, |k_y| < ref_modes`` whatever ``n`` is, so a
        seed gives the same field at every resolution (modes ``≥ n/2`` are dropped on small grids).

    Returns
    -------
    Tensor (batch, n, n).
    """
    z = _reference_noise(batch, ref_modes, generator)
    kx, ky = _reference_modes(ref_modes)
    lam = (4 * math.pi ** 2 / L ** 2) * (kx ** 2 + ky ** 2) + tau ** 2
    sigma = tau ** (alpha - 1)
    return _embed(sigma * lam ** (-alpha / 2) * z, n, dtype, device)


def mcwilliams_vorticity(batch: int, n: int, L: float = 2 * math.pi,
                         generator: torch.Generator | None = None, ref_modes: int = 128, *,
                         k0: float = 4.0, tau: float = 1.0, dtype=torch.float64,
                         device="cpu") -> torch.Tensor:
    """McWilliams (1984) decaying-turbulence initial vorticity.

    A Gaussian stream function with ``E|ψ̂_k|² ∝ k^(−1) (τ² + (k/k0)⁴)^(−1)`` (``k = |k|`` in
    units of ``2π/L``), each sample scaled to unit kinetic energy ``½⟨|u|²⟩ = 1`` computed on all
    reference modes (so the scale does not depend on ``n``), and ``ω = −Δψ``.

    Parameters
    ----------
    batch, n, L : number of fields, points per side, domain side.
    generator : CPU ``torch.Generator``; coefficients are drawn from it on CPU in float64.
    ref_modes : coefficients are drawn for ``|k_x|, |k_y| < ref_modes`` whatever ``n`` is; the
        default holds every mode of a 256² grid (the spectrum of ω is nearly flat, so this is the
        resolution at which the field is complete).
    k0, tau : spectral peak and low-wavenumber roll-off.

    Returns
    -------
    Tensor (batch, n, n).
    """
    z = _reference_noise(batch, ref_modes, generator)
    kx, ky = _reference_modes(ref_modes)
    k = torch.sqrt(kx ** 2 + ky ** 2)
    amp = torch.where(k > 0, 1 / torch.sqrt(k.clamp(min=1) * (tau ** 2 + (k / k0) ** 4)), 0.0)
    psi = amp * z
    kappa2 = (2 * math.pi / L) ** 2 * k ** 2
    # ½⟨|u|²⟩ = ½ Σ_k κ²|ψ_k|² over the full plane; the half-plane columns k_y > 0 count twice
    weight = torch.where(ky > 0, 2.0, 1.0)
    energy = 0.5 * (weight * kappa2 * psi.abs() ** 2).sum(dim=(-2, -1))
    psi = psi / energy.sqrt()[:, None, None]
    return _embed(kappa2 * psi, n, dtype, device)
