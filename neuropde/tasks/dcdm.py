"""Unsupervised training of a DCDM network (deep conjugate-direction method, arXiv 2205.10763) and
its use as a solver from ``predict.py``.

Training: every sample is a unit right-hand side b on the grid of the data's domain (Ritz-vector
combinations, ``data=poisson*``); the network proposes q = f(b) and the loss is the squared
residual after one exact line-search step along q, ‖b − (bᵀq / qᵀAq)·Aq‖² (scale-invariant, no
solution needed). ``rel_l2`` in the metrics is its square root per sample: the relative residual
left by that one step (1 = no progress; the identity direction, i.e. steepest descent, gives the
CG baseline of one step).

Inference (``python predict.py ckpt=...``): solves pressure-Poisson systems of the data's domain,
or of ``solve.domain=...``, with divergence right-hand sides, by DCDM and by CG side by side.
"""
from __future__ import annotations

import numpy as np
import torch

from neuropde.models.dcdm import apply_to_unknowns, dcdm_loss, network_direction
from neuropde.pde.poisson import assemble, make_domain
from neuropde.tasks.base import BaseTask


class DCDMTask(BaseTask):
    """Train :class:`~neuropde.models.dcdm.DCDMNet` on the data's Poisson matrix.

    Parameters
    ----------
    net : DCDMNet of the data's dimension.
    resolution, dim, domain, seed, n_obstacles : the domain whose matrix A the loss uses (the data's).
    """

    def __init__(self, net, optimizer: dict, scheduler: dict | None = None, stats: dict | None = None,
                 resolution: int = 16, dim: int = 3, domain: str = "empty_box", seed: int = 0, n_obstacles: int = 4):
        super().__init__(optimizer, scheduler, stats)
        self.net = net
        self.system = assemble(make_domain(domain, int(resolution), int(dim), int(seed), int(n_obstacles)))
        self._A: torch.Tensor | None = None
        self.persistence = False  # predict.py: no repeat-the-input baseline

    def matrix(self, like: torch.Tensor) -> torch.Tensor:
        """A (sparse CSR) in ``like``'s dtype and on its device, built once per device."""
        if self._A is None or self._A.device != like.device or self._A.dtype != like.dtype:
            self._A = self.system.matrix_torch(dtype=like.dtype, device=like.device)
        return self._A

    def forward(self, x: torch.Tensor, t_out: int | None = None) -> torch.Tensor:
        """Directions on the grid: (B, 1, *grid) -> (B, 1, *grid) (zero outside the fluid)."""
        b = self.system.from_grid(x[:, 0])
        return self.system.to_grid(apply_to_unknowns(self.net, self.system, b))[:, None]

    def _step_loss(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        x = batch[0]
        b = self.system.from_grid(x[:, 0])
        q = apply_to_unknowns(self.net, self.system, b)
        A = self.matrix(q)
        per_sample = torch.stack([dcdm_loss(q[i], b[i], A) for i in range(q.shape[0])])
        return per_sample.mean(), per_sample

    def training_step(self, batch, batch_idx):
        x = batch[0]
        b = self.system.from_grid(x[:, 0])
        q = apply_to_unknowns(self.net, self.system, b)
        loss = dcdm_loss(q, b, self.matrix(q))
        self.check_finite(loss)
        self.log("train/loss", loss, prog_bar=True, batch_size=x.shape[0])
        return loss

    def _evaluate(self, batch, stage: str):
        loss, per_sample = self._step_loss(batch)
        n = per_sample.shape[0]
        self.log(f"{stage}/loss", loss, batch_size=n, sync_dist=True)
        self.log(f"{stage}/rel_l2", per_sample.clamp(min=0).sqrt().mean(), prog_bar=True, batch_size=n, sync_dist=True)

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")
        if batch_idx == 0 and self.system.n <= 50_000:
            self.example = self._example(batch[0][:1])

    @torch.no_grad()
    def _example(self, x: torch.Tensor):
        """(truth, prediction) for the validation plot: A⁻¹b (direct solve) and the network's q
        scaled by its best factor onto A⁻¹b, as (1, 1, *plane) — the middle plane in 3-D."""
        from neuropde.pde.poisson import solve_direct

        b = self.system.from_grid(x[:, 0])[0]
        exact = torch.as_tensor(solve_direct(self.system, b.double().cpu().numpy()), dtype=torch.float64)
        q = apply_to_unknowns(self.net, self.system, b[None])[0].double().cpu()
        q = q * (q @ exact) / (q @ q).clamp(min=1e-300)
        fields = [self.system.to_grid(v).float()[None, None] for v in (exact, q)]
        if self.system.dim == 3:
            fields = [f[..., f.shape[-1] // 2] for f in fields]
        return fields[0], fields[1]

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    def predict_split(self, datamodule, split: str, out, options: dict) -> dict:
        """DCDM against CG on Poisson systems, ``solve.*`` options (:func:`predict_dcdm`); the split is not used."""
        return predict_dcdm(self, datamodule, split, out, options)

    def solve(self, system, b: torch.Tensor, tol: float = 1e-4, maxiter: int = 1000):
        """Solve ``A x = b`` for a Poisson ``system`` (:func:`neuropde.pde.poisson.assemble`) by
        conjugate directions that this network proposes: b (n,) -> a ``DCDMResult`` (``.x``,
        ``.iterations``, ``.residuals``). Any domain and size the network's convolutions take."""
        from neuropde.solvers.dcdm import dcdm_solve

        with torch.no_grad():
            return dcdm_solve(system.matrix_torch(dtype=torch.float64), b.double(), network_direction(self.net, system),
                              tol=tol, maxiter=maxiter, project=system)


def solve_comparison(task: DCDMTask, system, n_systems: int = 4, tol: float = 1e-4, maxiter: int = 1000,
                     seed: int = 0) -> dict:
    """DCDM and CG on ``n_systems`` divergence right-hand sides of ``system``: iterations, seconds,
    residual histories (lists per system) and the DCDM fallbacks."""
    from neuropde.pde.poisson import divergence_rhs
    from neuropde.solvers import cg
    from neuropde.solvers.dcdm import dcdm_solve

    A = system.matrix_torch(dtype=torch.float64)
    direction = network_direction(task.net, system)
    out = {k: [] for k in ("dcdm_iterations", "cg_iterations", "dcdm_seconds", "cg_seconds", "dcdm_fallbacks",
                           "dcdm_converged", "cg_converged", "dcdm_residuals", "cg_residuals")}
    rng = np.random.default_rng(seed)
    for _ in range(n_systems):
        b = torch.as_tensor(divergence_rhs(system, rng), dtype=torch.float64)
        with torch.no_grad():
            d = dcdm_solve(A, b, direction, tol=tol, maxiter=maxiter, project=system)
        c = cg(A, b, tol=tol, maxiter=maxiter, project=system)
        for name, r in (("dcdm", d), ("cg", c)):
            out[f"{name}_iterations"].append(r.iterations)
            out[f"{name}_seconds"].append(r.seconds)
            out[f"{name}_converged"].append(bool(r.converged))
            out[f"{name}_residuals"].append([float(v) for v in r.residuals])
        out["dcdm_fallbacks"].append(d.fallbacks)
    return out


def predict_dcdm(task: DCDMTask, dm, split: str, out, options: dict) -> dict:
    """``predict.py`` for DCDM checkpoints: DCDM against CG on Poisson systems (``solve.*`` options)."""
    from neuropde.callbacks.plots import plot_error_curves
    from neuropde.tasks.prediction import write_outputs

    opts = dict(options.get("solve") or {})
    g = dm.cfg["generator"]
    domain = opts.get("domain") or str(g["domain"])
    N = int(opts.get("resolution") or dm.cfg["resolution"])
    system = assemble(make_domain(domain, N, int(g["dim"]), int(opts.get("domain_seed", 1)), int(g["n_obstacles"])))
    task.net.float()
    r = solve_comparison(task, system, int(opts.get("systems", 4)), float(opts.get("tol", 1e-4)),
                         int(opts.get("maxiter", 1000)), seed=int(opts.get("seed", 0)))
    metrics = {"domain": domain, "resolution": N, "unknowns": system.n, "tol": float(opts.get("tol", 1e-4)),
               "dcdm_iterations_mean": float(np.mean(r["dcdm_iterations"])),
               "cg_iterations_mean": float(np.mean(r["cg_iterations"])), **r}
    write_outputs(out, metrics)
    plot_error_curves({"DCDM": r["dcdm_residuals"][0], "CG": r["cg_residuals"][0]}, out / "plots" / "residuals.png",
                      title=f"{domain} {N}^{int(g['dim'])}: relative residual, first system", ylabel="‖b − Ax‖ / ‖b‖")
    return metrics
