"""EquiNO: equilibrium neural operator for FE² micro-scale solid mechanics (arXiv 2504.07976).

Displacement fluctuations and stresses of a periodic RVE are expanded in POD bases built from a few
FE snapshots, so every predicted stress field is in discrete equilibrium and every displacement is
periodic by construction; two small MLPs map the macro strain to the POD coefficients. Training
needs no labels: the only loss is the mismatch between the constitutive stress σ̂(ε(b_u)) of the
displacement branch and the equilibrated stress Φ_σ b_σ of the stress branch.

Pieces (see ``shared/reference/equino.md`` §2.2–2.6)
-----------------------------------------------------
* :class:`~neuropde.models.pod.PODBases` (its own module): Φ_u, Φ_ε = BΦ_u, Φ_σ, Φ̄_σ and
  coefficient scalings from ``RVESolver.solve_many`` output.
* :class:`EquiNO`: the two branches, fields, the σ̄ fast path and :meth:`EquiNO.physics_loss`.
* Baselines on the same networks: :func:`data_loss` (supervised on FE coefficients) and
  :func:`energy_loss` (deep-energy variant, ½ε:σ̂ as coded in the reference).
* :func:`latin_hypercube`, :func:`relative_errors`. Training (Adam, then full-batch L-BFGS) is
  :class:`neuropde.tasks.equino.EquiNOTask`.

Conventions follow :mod:`neuropde.pde.elasticity`: Ē = (Ē_xx, Ē_yy, γ̄_xy) with engineering shear,
strain/stress [xx, yy, xy] with tensor shear, integration point ``e·n_gp + q``; float64 throughout.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from neuropde.errors import UserError
from neuropde.models.pod import PODBases
from neuropde.pde.elasticity import MATERIALS, LinearElastic, NonlinearElastic, RVESolver, latin_hypercube

__all__ = ["EquiNO", "torch_stress", "data_loss", "energy_loss", "latin_hypercube", "relative_errors", "project"]

_F64 = torch.float64
_TRACE = (1.0, 1.0, 0.0)  # trace direction m in [xx, yy, xy]
_SHEAR_W = (1.0, 1.0, 2.0)  # tensor-shear inner product: ε:σ = Σ_c W_c ε_c σ_c
_TO_TENSOR_SHEAR = (1.0, 1.0, 0.5)  # (Ē_xx, Ē_yy, γ̄) -> (Ē_xx, Ē_yy, γ̄/2)


# --------------------------------------------------------------------------------------------------
# constitutive law (torch, differentiable)
# --------------------------------------------------------------------------------------------------
def _law(exx: Tensor, eyy: Tensor, exy: Tensor, material) -> tuple[Tensor, Tensor, Tensor]:
    """σ̂ of one phase component by component (tensor shear): contiguous slabs, no reductions over a
    trailing dimension of 3, which on a CPU cost more than the arithmetic."""
    tr = exx + eyy
    dxx, dyy = exx - tr / 3, eyy - tr / 3  # ε^D = ε − (trE/3)[1,1,0], as in the solver; ε^D_xy = ε_xy
    if isinstance(material, LinearElastic):
        g, p = 2 * material.G, material.K * tr
    elif isinstance(material, NonlinearElastic):
        s2 = dxx * dxx + dyy * dyy + 2 * exy * exy
        # the clamp keeps ∂s/∂ε finite at ε^D = 0 (e.g. Ē = 0), where sqrt's derivative is infinite
        g, p = material.alpha / (material.beta + torch.sqrt(s2.clamp_min(torch.finfo(exx.dtype).tiny))), material.K * tr
    else:
        raise UserError(f"no torch law for {type(material).__name__}: use LinearElastic or NonlinearElastic "
                        f"from neuropde.pde.elasticity for every phase")
    return p + g * dxx, p + g * dyy, g * exy


def torch_stress(eps: Tensor, material) -> Tensor:
    """σ̂(ε) of one phase, a torch mirror of ``material.stress`` (the numpy law has no autograd).

    eps (..., 3) tensor shear -> σ (..., 3). ``material`` is a :class:`LinearElastic` or
    :class:`NonlinearElastic` from :mod:`neuropde.pde.elasticity`; its parameters are read from it.
    """
    return torch.stack(_law(*eps.unbind(-1), material), -1)


def _mlp(n_in: int, width: int, depth: int, n_out: int) -> nn.Sequential:
    dims = [n_in] + [width] * depth
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b, dtype=_F64), nn.SiLU()]
    layers.append(nn.Linear(dims[-1], n_out, dtype=_F64))
    for lin in layers[::2]:  # Keras defaults (Glorot uniform, zero bias), as the reference trains with
        nn.init.xavier_uniform_(lin.weight)
        nn.init.zeros_(lin.bias)
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------------
class EquiNO(nn.Module):
    """Displacement branch N_u and stress branch N_σ (3 → depth × width SiLU → r) over POD bases.

    Parameters
    ----------
    bases : :class:`PODBases` (or its ``state_dict``); registered as float64 buffers.
    materials : {phase id: LinearElastic | NonlinearElastic}; default the solver's ``MATERIALS``.
    width, depth : hidden units and hidden layers per branch (reference: 64, 4 -> 27 552 parameters at r = 16).
    strain_scale : the input is Ē / strain_scale; tie it to the half-width of the sampling box
        (reference pitfall 7: 0.04 hard-coded there).
    """

    def __init__(self, bases: PODBases | dict, materials: dict | None = None, width: int = 64, depth: int = 4,
                 strain_scale: float = 0.04):
        super().__init__()
        bases = bases if isinstance(bases, PODBases) else PODBases.from_state_dict(bases)
        for name, value in bases.state_dict().items():
            self.register_buffer(name, value.clone())
        materials = MATERIALS if materials is None else materials
        self.laws = {}
        for pid in torch.unique(bases.phase_ip).tolist():
            if pid not in materials:
                raise UserError(f"no material for phase {pid}: pass materials={{{pid}: LinearElastic(...)}}")
            self.laws[pid] = materials[pid]
            torch_stress(torch.zeros(1, 3, dtype=_F64), materials[pid])  # fail now on an unsupported law
        if not strain_scale > 0:
            raise UserError(f"strain_scale must be positive (half-width of the strain box); got {strain_scale}")
        self.strain_scale = float(strain_scale)
        self.register_buffer("fitted", torch.tensor(True))  # False until a placeholder gets real bases
        r = bases.rank
        self.net_u, self.net_sigma = _mlp(3, width, depth, r), _mlp(3, width, depth, r)

    @classmethod
    def for_mesh(cls, geometry: str, resolution: int, element: str = "quad8", rank: int = 16, width: int = 64,
                 depth: int = 4, strain_scale: float = 0.04) -> "EquiNO":
        """An EquiNO for the structured RVE ``make_rve(geometry, resolution, element)`` with placeholder
        (zero) bases: the training task fits them from the data's FE snapshots, a checkpoint restores them.
        ``sv_u``/``sv_sigma`` keep r entries here (all N_s once fitted)."""
        from neuropde.pde.elasticity import make_rve

        model = cls(PODBases.placeholder(RVESolver(make_rve(geometry, int(resolution), element)), rank),
                    width=width, depth=depth, strain_scale=strain_scale)
        model.fitted.fill_(False)
        return model

    def set_bases(self, bases: PODBases) -> None:
        """Replace the POD bases (same mesh and rank; singular-value vectors may change length)."""
        if bases.rank != self.phi_u.shape[1] or bases.phi_sigma.shape != self.phi_sigma.shape:
            raise UserError(f"bases of rank {bases.rank} on {bases.phi_sigma.shape[0]} ips do not fit this network "
                            f"(rank {self.phi_u.shape[1]}, {self.phi_sigma.shape[0]} ips): build a new EquiNO")
        for name, value in bases.state_dict().items():
            setattr(self, name, value.to(getattr(self, name).device).clone())
        self.fitted.fill_(True)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the singular-value vectors have N_s entries once fitted: take the checkpoint's length
        for name in ("sv_u", "sv_sigma"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _input(self, E_bar) -> Tensor:
        E = torch.as_tensor(E_bar, dtype=_F64, device=self.w.device)
        if E.ndim != 2 or E.shape[1] != 3:
            raise UserError(f"E_bar must have shape (N, 3) = (Ē_xx, Ē_yy, γ̄_xy) per row; got {tuple(E.shape)}")
        return E

    def coefficients(self, E_bar) -> tuple[Tensor, Tensor]:
        """De-normalised POD coefficients (b_u, b_σ), each (N, r), for E_bar (N, 3)."""
        x = self._input(E_bar) / self.strain_scale
        return (self.net_u(x) * self.std_u + self.mean_u,
                self.net_sigma(x) * self.std_sigma + self.mean_sigma)

    # Fields are computed component-major, (N, 3, n_ip), where every component is a contiguous slab:
    # the physics loss then runs ~3x faster on a CPU than on the (N, n_ip, 3) layout of the API.
    @staticmethod
    def _modes_cm(phi: Tensor) -> Tensor:
        """(n_ip, r, 3) modes -> (r, 3·n_ip), component-major."""
        return phi.permute(1, 2, 0).reshape(phi.shape[1], -1)

    def _strain_cm(self, E: Tensor, b_u: Tensor) -> Tensor:
        eps = (b_u @ self._modes_cm(self.phi_eps)).view(len(E), 3, -1)
        return eps + (E * E.new_tensor(_TO_TENSOR_SHEAR))[:, :, None]

    def _stress_law_cm(self, eps: Tensor) -> Tensor:
        out = torch.empty_like(eps)
        for pid, material in self.laws.items():  # each law on its own points only
            idx = torch.nonzero(self.phase_ip == pid).squeeze(1)
            out = out.index_copy(2, idx, torch.stack(_law(*eps.index_select(2, idx).unbind(1), material), 1))
        return out

    def strain(self, E_bar, b_u: Tensor | None = None) -> Tensor:
        """ε = Φ_ε b_u + TĒ at the integration points: (N, n_ip, 3), tensor shear."""
        E = self._input(E_bar)
        b_u = self.coefficients(E)[0] if b_u is None else b_u
        return self._strain_cm(E, b_u).transpose(1, 2)

    def stress_law(self, eps: Tensor) -> Tensor:
        """σ̂(ε) per phase at the integration points: eps (N, n_ip, 3) -> (N, n_ip, 3)."""
        return self._stress_law_cm(eps.transpose(1, 2)).transpose(1, 2)

    def constitutive_stress(self, E_bar) -> Tensor:
        """σ_c = σ̂(ε(b_u)) of the displacement branch: (N, n_ip, 3)."""
        return self.stress_law(self.strain(E_bar))

    def equilibrated_stress(self, E_bar) -> Tensor:
        """σ_N = Φ_σ b_σ of the stress branch, in discrete equilibrium by construction: (N, n_ip, 3)."""
        b_s = self.coefficients(E_bar)[1]
        return (b_s @ self._modes_cm(self.phi_sigma)).view(len(b_s), 3, -1).transpose(1, 2)

    def homogenized_stress(self, E_bar) -> Tensor:
        """σ̄ = b_σ Φ̄_σ (N, 3): the FE² fast path, stress branch and an r×3 product only."""
        x = self._input(E_bar) / self.strain_scale
        return (self.net_sigma(x) * self.std_sigma + self.mean_sigma) @ self.phi_sigma_bar

    def homogenized_tangent(self, E_bar) -> Tensor:
        """C̄ = ∂σ̄/∂(Ē_xx, Ē_yy, γ̄) (N, 3, 3) by automatic differentiation of the fast path.

        Also inside ``no_grad``/``inference_mode`` (Lightning's test and predict loops): there
        torch 2.11's ``jacrev`` returns zeros without a word (2.13's differentiates).
        """
        f = lambda e: self.homogenized_stress(e[None])[0]  # noqa: E731
        with torch.inference_mode(False), torch.enable_grad():
            return torch.func.vmap(torch.func.jacrev(f))(self._input(E_bar).clone())

    def displacement(self, E_bar, total: bool = False) -> Tensor:
        """Fluctuation ũ = Φ_u b_u − ũ(pinned) (N, n_nodes, 2); ``total`` adds the affine part Ē·x."""
        E = self._input(E_bar)
        u = (self.coefficients(E)[0] @ self.phi_u.T).reshape(len(E), -1, 2)
        u = u - u[:, self.pinned][:, None]  # rigid translation; a no-op up to round-off for FE modes
        if total:
            x, y = self.nodes[:, 0], self.nodes[:, 1]
            Exx, Eyy, g = (E[:, i, None] for i in range(3))
            u = u + torch.stack([Exx * x + 0.5 * g * y, Eyy * y + 0.5 * g * x], -1)
        return u

    def physics_loss(self, E_bar) -> Tensor:
        """Label-free EquiNO loss: mean over strains, ips and components of (σ_c − σ_N)² (unweighted)."""
        E = self._input(E_bar)
        b_u, b_s = self.coefficients(E)
        sig_c = self._stress_law_cm(self._strain_cm(E, b_u))
        sig_n = (b_s @ self._modes_cm(self.phi_sigma)).view(len(E), 3, -1)
        return ((sig_c - sig_n) ** 2).mean()


# --------------------------------------------------------------------------------------------------
# baselines
# --------------------------------------------------------------------------------------------------
def project(model: EquiNO, snapshots: dict) -> tuple[Tensor, Tensor]:
    """FE snapshot coefficients (a_u, a_σ), each (N, r): orthogonal projections Φᵀ on the bases."""
    dev = model.w.device
    u = torch.as_tensor(np.asarray(snapshots["u_fluct"]), dtype=_F64, device=dev).flatten(1)
    sig = torch.as_tensor(np.asarray(snapshots["sigma"]), dtype=_F64, device=dev)
    return u @ model.phi_u, torch.einsum("nic,ikc->nk", sig, model.phi_sigma)


def data_loss(model: EquiNO, E_bar, snapshots: dict) -> Tensor:
    """Supervised baseline: MSE of both branches' normalised outputs against the FE coefficients.

    The bases are orthonormal, so this is the (unweighted) L2 error of the projected fields in units
    of the coefficient std. ``snapshots`` holds ``u_fluct`` (N, n_nodes, 2) and ``sigma`` (N, n_ip, 3)
    for the rows of E_bar (N, 3).
    """
    E = model._input(E_bar)
    if len(np.asarray(snapshots["sigma"])) != len(E):
        raise UserError("data_loss needs one snapshot per row of E_bar: pass snapshots['E_bar'] as E_bar")
    a_u, a_s = project(model, snapshots)
    b_u, b_s = model.coefficients(E)
    return (((b_u - a_u) / model.std_u) ** 2).mean() + (((b_s - a_s) / model.std_sigma) ** 2).mean()


def energy_loss(model: EquiNO, E_bar, b_u: Tensor | None = None) -> Tensor:
    """Deep-energy variant: mean over strains of Σ_ip ½ ε:σ̂(ε) w_ip of the displacement branch.

    ½ε:σ̂ is the stored energy only for LINEAR elasticity (there its minimiser over span Φ_u is the
    Galerkin solution). The matrix law of the reference is not hyperelastic in 2-D (ε^D = ε −
    (trE/3)[1,1,0] makes its tangent non-symmetric), so no true potential exists and this coded
    variant (reference §2.6) is then only a heuristic whose minimiser is not the FE equilibrium.
    ``b_u`` (N, r) replaces the displacement branch's coefficients (to probe the functional itself).
    """
    eps = model.strain(E_bar, b_u)
    sig = model.stress_law(eps)
    psi = 0.5 * (eps * sig * eps.new_tensor(_SHEAR_W)).sum(-1)  # (N, n_ip)
    return (psi @ model.w).mean()


# --------------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------------
def relative_errors(pred, ref, weights=None) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample relative L2 over space, per component, and its median over samples.

    Parameters
    ----------
    pred, ref : (N, n_points, C) fields, e.g. stresses (N, n_ip, 3) -> (σxx, σyy, σxy).
    weights : optional (n_points,) quadrature weights; default unweighted (the reference's metric).

    Returns
    -------
    (per_sample (N, C), median (C,)), both numpy float64, as fractions (not percent).
    """
    p = torch.as_tensor(pred).detach().cpu().double().numpy()
    r = torch.as_tensor(ref).detach().cpu().double().numpy()
    if p.shape != r.shape or p.ndim != 3:
        raise UserError(f"pred and ref must both have shape (N, n_points, C); got {p.shape} and {r.shape}")
    w = np.ones(p.shape[1]) if weights is None else np.asarray(weights, dtype=np.float64)
    num = np.sqrt(np.einsum("p,npc->nc", w, (p - r) ** 2))
    den = np.sqrt(np.einsum("p,npc->nc", w, r ** 2))
    per = num / np.where(den > 0, den, 1.0)
    return per, np.median(per, axis=0)
