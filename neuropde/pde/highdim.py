"""Elliptic PDEs on the unit ball in d dimensions (d up to 10⁵) with exact solutions, for PINNs.

The test problems of SDGD (Hu, Shukla, Karniadakis, Kawaguchi, arXiv 2307.12306, Sec. 5.1):

    L u = g  in Bᵈ = {‖x‖ < 1},   u = 0 on ∂Bᵈ,   L u = Δu + N(u),

with ``N(u) = 0`` (Poisson), ``u − u³`` (Allen–Cahn) or ``sin u`` (sine-Gordon), and the forcing
``g = L u*`` of an inseparable exact solution that couples neighbouring coordinates:

    two-body    u*(x) = (1 − ‖x‖²) Σ_{i=1}^{d−1} c_i sin(x_i + cos x_{i+1} + x_{i+1} cos x_i)
    three-body  u*(x) = (1 − ‖x‖²) Σ_{i=1}^{d−2} c_i exp(x_i x_{i+1} x_{i+2})

with ``c_i ~ N(0, 1)`` drawn from ``coef_seed``. Both and their Laplacians are evaluated in
closed form at O(d) cost per point (vectorised over the neighbour pairs/triples), so the forcing
costs nothing next to the network.

Points: ``sampler="volume"`` draws uniformly in the volume of the ball (radius U^{1/d}); at large d
almost all of them lie near the sphere. ``sampler="radius"`` draws the radius uniformly in [0, 1],
as the reference code does for training and test points; its published errors use that sampler.
"""
from __future__ import annotations

import torch

from neuropde.errors import UserError

OPERATORS = ("poisson", "allen_cahn", "sine_gordon")
SOLUTIONS = ("two_body", "three_body")
SAMPLERS = ("volume", "radius")


def sample_ball(n: int, dim: int, sampler: str = "volume", generator: torch.Generator | None = None,
                device=None, dtype=torch.float32) -> torch.Tensor:
    """``n`` points in the open unit ball of ``dim`` dimensions: (n, dim).

    Direction: a normalised Gaussian vector (uniform on the sphere). Radius: ``U^{1/dim}`` for
    ``sampler="volume"`` (uniform in volume), ``U`` for ``sampler="radius"`` (the reference's).
    """
    if sampler not in SAMPLERS:
        raise UserError(f"data.sampler={sampler}: choose one of {', '.join(SAMPLERS)}")
    device = device if device is not None else (generator.device if generator is not None else "cpu")
    direction = torch.randn(n, dim, generator=generator, device=device, dtype=dtype)
    direction = direction / direction.norm(dim=1, keepdim=True)
    u = torch.rand(n, 1, generator=generator, device=device, dtype=dtype)
    radius = u.pow(1.0 / dim) if sampler == "volume" else u
    return direction * radius


def _two_body(x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """g = Σ c_i sin θ_i with θ_i = x_i + cos x_{i+1} + x_{i+1} cos x_i: (g, Δg, x·∇g), each (n,)."""
    a, b = x[:, :-1], x[:, 1:]                      # x_i, x_{i+1}: (n, d−1)
    theta = a + torch.cos(b) + b * torch.cos(a)
    s, co = torch.sin(theta), torch.cos(theta)
    da = 1 - b * torch.sin(a)                       # ∂θ/∂x_i
    db = -torch.sin(b) + torch.cos(a)               # ∂θ/∂x_{i+1}
    daa = -b * torch.cos(a)                         # ∂²θ/∂x_i²
    dbb = -torch.cos(b)                             # ∂²θ/∂x_{i+1}²
    g = s @ c
    # ∂²(sin θ)/∂x_j² = −sin θ (∂θ/∂x_j)² + cos θ ∂²θ/∂x_j²; θ_i depends on x_i and x_{i+1} only
    lap = (-s * (da * da + db * db) + co * (daa + dbb)) @ c
    radial = (co * (a * da + b * db)) @ c
    return g, lap, radial


def _three_body(x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """g = Σ c_i exp(x_i x_{i+1} x_{i+2}): (g, Δg, x·∇g), each (n,)."""
    a, b, z = x[:, :-2], x[:, 1:-1], x[:, 2:]
    phi = a * b * z
    e = torch.exp(phi)
    g = e @ c
    lap = (e * ((b * z) ** 2 + (a * z) ** 2 + (a * b) ** 2)) @ c
    radial = (e * 3 * phi) @ c                      # x·∇φ = 3φ (φ is homogeneous of degree 3)
    return g, lap, radial


class BallProblem:
    """``Δu + N(u) = g`` on the unit ball with a known solution.

    Parameters
    ----------
    dim : number of dimensions d (≥ 3 for the three-body solution, ≥ 2 otherwise).
    operator : ``poisson`` (N = 0), ``allen_cahn`` (N = u − u³) or ``sine_gordon`` (N = sin u).
    solution : ``two_body`` or ``three_body``.
    coef_seed : seed of the coefficients c_i ~ N(0, 1) (the reference's default is 0).
    """

    def __init__(self, dim: int, operator: str = "poisson", solution: str = "two_body", coef_seed: int = 0):
        if operator not in OPERATORS:
            raise UserError(f"data.operator={operator}: choose one of {', '.join(OPERATORS)}")
        if solution not in SOLUTIONS:
            raise UserError(f"data.solution={solution}: choose one of {', '.join(SOLUTIONS)}")
        terms = int(dim) - (1 if solution == "two_body" else 2)
        if terms < 1:
            raise UserError(f"data.dim={dim} is too small for the {solution} solution: use dim ≥ {int(dim) - terms + 1}")
        self.dim, self.operator, self.solution = int(dim), operator, solution
        g = torch.Generator().manual_seed(int(coef_seed))
        self.coef = torch.randn(terms, generator=g, dtype=torch.float64)   # c_i, kept in float64
        self._inner = _two_body if solution == "two_body" else _three_body

    def nonlinear(self, u: torch.Tensor) -> torch.Tensor:
        """N(u), elementwise."""
        if self.operator == "allen_cahn":
            return u - u ** 3
        if self.operator == "sine_gordon":
            return torch.sin(u)
        return torch.zeros_like(u)

    def _parts(self, x: torch.Tensor):
        if x.shape[-1] != self.dim:
            raise UserError(f"points have {x.shape[-1]} coordinates; the problem has dim={self.dim}")
        return self._inner(x, self.coef.to(device=x.device, dtype=x.dtype))

    def exact(self, x: torch.Tensor) -> torch.Tensor:
        """u*(x): (n, d) -> (n,)."""
        g, _, _ = self._parts(x)
        return (1 - (x * x).sum(-1)) * g

    def exact_laplacian(self, x: torch.Tensor) -> torch.Tensor:
        """Δu*(x): (n, d) -> (n,). With s = 1 − ‖x‖²: Δ(s g) = g Δs + 2 ∇s·∇g + s Δg = −2d g − 4 x·∇g + s Δg."""
        g, lap, radial = self._parts(x)
        s = 1 - (x * x).sum(-1)
        return -2 * self.dim * g - 4 * radial + s * lap

    def forcing(self, x: torch.Tensor) -> torch.Tensor:
        """g(x) = Δu* + N(u*): (n, d) -> (n,)."""
        return self.exact_laplacian(x) + self.nonlinear(self.exact(x))

    def residual(self, laplacian: torch.Tensor, u: torch.Tensor, forcing: torch.Tensor) -> torch.Tensor:
        """R = Δu + N(u) − g from a Laplacian (exact or estimated), u and g: each (n,)."""
        return laplacian + self.nonlinear(u) - forcing

    def __repr__(self) -> str:
        return f"BallProblem(dim={self.dim}, operator={self.operator}, solution={self.solution})"

