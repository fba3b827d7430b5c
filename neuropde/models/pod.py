"""POD bases of a periodic RVE for EquiNO (arXiv 2504.07976, reference §2.2).

A thin SVD of FE snapshots gives orthonormal fluctuation modes Φ_u and stress modes Φ_σ; every
combination of the stress modes is in discrete equilibrium because each snapshot is. The strain
modes Φ_ε = BΦ_u use the solver's own B operator, so strains from coefficients are exact kinematics.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from torch import Tensor

from neuropde.errors import UserError
from neuropde.pde.elasticity import RVESolver

__all__ = ["PODBases"]

_F64 = torch.float64


@dataclass
class PODBases:
    """POD bases of one RVE mesh (reference §2.2); every field is a float64 (or int64) tensor.

    Attributes
    ----------
    phi_u : (2·n_nodes, r) fluctuation modes, flattened node-major ([u_x0, u_y0, u_x1, …]), orthonormal.
    phi_eps : (n_ip, r, 3) strain modes B Φ_u (tensor shear).
    phi_sigma : (n_ip, r, 3) stress modes, orthonormal as vectors of length 3·n_ip.
    phi_sigma_bar : (r, 3) homogenised stress modes Σ_ip w_ip Φ_σ(ip) / |Ω|.
    mean_u, std_u, mean_sigma, std_sigma : () scalar statistics over all entries of the snapshot
        coefficients S Vᵀ[:r] (the reference's de-normalisation).
    sv_u, sv_sigma : (N_s,) all singular values of the snapshot matrices.
    w : (n_ip,) integration weights; phase_ip : (n_ip,) int64 phase ids.
    nodes : (n_nodes, 2) coordinates; pinned : () int64 node whose fluctuation is fixed to 0.
    """

    phi_u: Tensor
    phi_eps: Tensor
    phi_sigma: Tensor
    phi_sigma_bar: Tensor
    mean_u: Tensor
    std_u: Tensor
    mean_sigma: Tensor
    std_sigma: Tensor
    sv_u: Tensor
    sv_sigma: Tensor
    w: Tensor
    phase_ip: Tensor
    nodes: Tensor
    pinned: Tensor

    @property
    def rank(self) -> int:
        return self.phi_u.shape[1]

    @staticmethod
    def _energy(sv: Tensor, r: int) -> float:
        return float((sv[:r] ** 2).sum() / (sv ** 2).sum())

    @property
    def energy_u(self) -> float:
        """Fraction Σ_{k<r} s_k² / Σ s_k² of the fluctuation snapshots' energy the basis keeps."""
        return self._energy(self.sv_u, self.rank)

    @property
    def energy_sigma(self) -> float:
        """Same fraction for the stress snapshots."""
        return self._energy(self.sv_sigma, self.rank)

    def state_dict(self) -> dict[str, Tensor]:
        """{field name: tensor}, ready for ``register_buffer`` or ``torch.save(weights_only=True)``."""
        return dict(asdict(self))

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> "PODBases":
        missing = [f.name for f in fields(cls) if f.name not in state]
        if missing:
            raise UserError(f"POD state is missing {missing}: save it with PODBases.state_dict()")
        return cls(**{f.name: state[f.name] for f in fields(cls)})

    @classmethod
    def placeholder(cls, solver: RVESolver, rank: int) -> "PODBases":
        """Zero modes of the right shapes for ``solver``'s mesh: a network to load a checkpoint into,
        or to be given bases by :meth:`neuropde.models.equino.EquiNO.set_bases` once the FE snapshots are at hand."""
        n_ip, n_nodes, r = len(solver.w), solver.mesh.n_nodes, int(rank)
        z = lambda *shape: torch.zeros(shape, dtype=_F64)  # noqa: E731
        one = torch.ones((), dtype=_F64)
        return cls(z(2 * n_nodes, r), z(n_ip, r, 3), z(n_ip, r, 3), z(r, 3), z(), one, z(), one.clone(), z(r),
                   z(r), torch.tensor(solver.w), torch.tensor(solver.phase_ip), torch.tensor(solver.mesh.nodes),
                   torch.tensor(solver.mesh.pinned))

    @classmethod
    def from_snapshots(cls, solver: RVESolver, snapshots: dict, rank: int) -> "PODBases":
        """Thin SVD (no mean subtraction) of FE snapshots from ``solver.solve_many``.

        Parameters
        ----------
        solver : the RVESolver (mesh, B, w) that produced the snapshots; the bases are only valid on it.
        snapshots : dict with ``u_fluct`` (N_s, n_nodes, 2) and ``sigma`` (N_s, n_ip, 3).
        rank : r ≤ N_s modes kept per basis.
        """
        for key in ("u_fluct", "sigma"):
            if key not in snapshots:
                raise UserError(f"snapshots need {key!r}: pass the dict returned by RVESolver.solve_many")
        u = np.asarray(snapshots["u_fluct"], dtype=np.float64)
        sig = np.asarray(snapshots["sigma"], dtype=np.float64)
        n_s, n_ip = len(u), len(solver.w)
        if u.shape != (n_s, solver.mesh.n_nodes, 2) or sig.shape != (n_s, n_ip, 3):
            raise UserError(f"snapshots do not match the solver's mesh ({solver.mesh.n_nodes} nodes, {n_ip} ips):"
                            f" got u_fluct {u.shape}, sigma {sig.shape}; solve them with this solver")
        rank = int(rank)
        if not 1 <= rank <= n_s:
            raise UserError(f"rank must be between 1 and the number of snapshots ({n_s}); got {rank}: "
                            f"lower the rank or solve more snapshots")
        Uu, Su, Vu = np.linalg.svd(u.reshape(n_s, -1).T, full_matrices=False)
        Us, Ss, Vs = np.linalg.svd(sig.reshape(n_s, -1).T, full_matrices=False)
        phi_u, phi_s = Uu[:, :rank], Us[:, :rank].reshape(n_ip, 3, rank).transpose(0, 2, 1)
        a_u, a_s = Su[:rank, None] * Vu[:rank], Ss[:rank, None] * Vs[:rank]  # (r, N_s) coefficients
        # Φ_ε = B Φ_u with the solver's own B operator: strain = Φ_ε b_u + TĒ is then exact kinematics
        modes = phi_u.reshape(solver.mesh.n_nodes, 2, rank)[solver.mesh.elements]  # (n_el, nen, 2, r)
        modes = modes.reshape(len(solver.mesh.elements), -1, rank)
        phi_eps = np.einsum("eqia,ear->eqri", solver.B, modes).reshape(n_ip, rank, 3)
        phi_bar = np.einsum("q,qrc->rc", solver.w, phi_s) / solver.w.sum()
        t = lambda a, dtype=_F64: torch.tensor(np.asarray(a), dtype=dtype)  # noqa: E731  (a copy, 0-d stays 0-d)
        return cls(t(phi_u), t(phi_eps), t(phi_s), t(phi_bar), t(a_u.mean()), t(a_u.std()), t(a_s.mean()),
                   t(a_s.std()), t(Su), t(Ss), t(solver.w), t(solver.phase_ip, torch.int64),
                   t(solver.mesh.nodes), t(solver.mesh.pinned, torch.int64))
