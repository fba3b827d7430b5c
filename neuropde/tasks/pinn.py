"""Training physics-informed networks on collocation points (``model=sdgd_pinn``, ``data=highdim``).

Every step draws fresh collocation points in the unit ball on the task's device, seeded by
(seed, step): a resumed run and an L-BFGS closure re-evaluation see the same points and the same
sampled dimensions. Validation and test compare the network with the exact solution on seeded
points (relative L2 and L1 over the whole split) and report the root-mean-square PDE residual,
with the exact Laplacian, on the first ``residual_points`` of them.
"""
from __future__ import annotations

import numpy as np
import torch

from neuropde.errors import UserError
from neuropde.models.sdgd_pinn import ESTIMATORS, residual_loss
from neuropde.pde.highdim import BallProblem, sample_ball
from neuropde.tasks.base import BaseTask
from neuropde.tasks.epoch_metrics import EpochMetrics


def step_generator(seed: int, step: int, device) -> torch.Generator:
    """The generator of one training step's points and dimensions."""
    state = np.random.SeedSequence([int(seed), int(step)]).generate_state(1)[0]
    return torch.Generator(device=device).manual_seed(int(state))


def sphere_chart(dim: int, radius: float, n: int = 48, seed: int = 0) -> torch.Tensor:
    """A 2-D patch of the sphere of ``radius``: x(a, b) = r·(e₀ + a e₁ + b e₂)/‖·‖ for a, b in
    [−1.5, 1.5], with orthonormal random e₀, e₁, e₂. Returns (n, n, dim) points (float64)."""
    g = torch.Generator().manual_seed(seed)
    e = torch.linalg.qr(torch.randn(dim, 3, generator=g, dtype=torch.float64))[0].T    # (3, dim)
    a = torch.linspace(-1.5, 1.5, n, dtype=torch.float64)
    A, Bm = torch.meshgrid(a, a, indexing="ij")
    x = e[0] + A[..., None] * e[1] + Bm[..., None] * e[2]
    return radius * x / x.norm(dim=-1, keepdim=True)


class SDGDTask(EpochMetrics, BaseTask):
    """Train a :class:`~neuropde.models.sdgd_pinn.BallPINN` by stochastic dimension gradient descent.

    Parameters
    ----------
    net : BallPINN of input dimension ``dim``.
    dim, operator, solution, coef_seed : the problem (:class:`~neuropde.pde.highdim.BallProblem`).
    sampler : ``volume`` or ``radius`` (collocation points, as the data's evaluation points).
    collocation : points per step (N_r).
    seed : seeds the points and dimensions of every step.
    estimator : ``full``, ``biased`` or ``unbiased``; batch_dims : B; dim_chunk : directions per
        vectorised call for exact Laplacians (memory bound).
    residual_points : validation/test points that also get the exact residual (0: none).
    """

    def __init__(self, net, optimizer: dict, scheduler: dict | None = None, stats: dict | None = None,
                 dim: int = 100, operator: str = "poisson", solution: str = "two_body", coef_seed: int = 0,
                 sampler: str = "volume", collocation: int = 100, seed: int = 0, estimator: str = "unbiased",
                 batch_dims: int = 100, dim_chunk: int | None = 1000, residual_points: int = 200):
        super().__init__(optimizer, scheduler, stats)
        if net.dim != int(dim):
            raise UserError(f"the network takes {net.dim}-dimensional points and the data has dim={dim}: "
                            f"a PINN is trained for one dimension; set data.dim={net.dim} or train anew")
        if estimator not in ESTIMATORS:
            raise UserError(f"model.task.estimator={estimator}: choose one of {', '.join(ESTIMATORS)}")
        self.net = net
        self.problem = BallProblem(dim, operator, solution, coef_seed)
        self.sampler, self.collocation, self.seed = sampler, int(collocation), int(seed)
        self.estimator, self.batch_dims, self.dim_chunk = estimator, int(batch_dims), dim_chunk
        self.residual_points = int(residual_points)
        self.persistence = False
        self._eval: dict[str, torch.Tensor] = {}  # running sums over the epoch's points

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """u_θ at points: (n, d) -> (n,)."""
        return self.net(x)

    def training_step(self, batch, batch_idx):
        g = step_generator(self.seed, self.global_step, self.device)
        x = sample_ball(self.collocation, self.problem.dim, self.sampler, g, device=self.device,
                        dtype=self.net.lift.weight.dtype)   # float64 under trainer.precision=64-true
        loss, mse = residual_loss(self.net, self.problem, x, self.estimator, self.batch_dims, g, self.dim_chunk)
        self.check_finite(loss)
        # the surrogate's value means nothing for `unbiased`: log the residual MSE estimate instead
        self.log("train/residual_mse", mse, prog_bar=True, batch_size=x.shape[0])
        self.log("train/loss", loss, batch_size=x.shape[0])
        return loss

    # ------------------------------------------------------------------------------- evaluation
    def exact_residual(self, x: torch.Tensor) -> torch.Tensor:
        """R = Δu_θ + N(u_θ) − g with the exact Laplacian (all d dimensions): (n, d) -> (n,)."""
        with torch.no_grad():
            u, lap = self.net.laplacian(x, None, self.dim_chunk)
            return self.problem.residual(lap, u, self.problem.forcing(x))

    def _evaluate(self, batch, batch_idx: int, stage: str) -> None:
        x, exact = batch
        pred = self.net(x)
        err = pred - exact
        sums = {"err2": (err * err).sum(), "ref2": (exact * exact).sum(),
                "err1": err.abs().sum(), "ref1": exact.abs().sum()}
        if batch_idx == 0 and self.residual_points > 0:
            r = self.exact_residual(x[:self.residual_points])
            sums.update(res2=(r * r).sum(), nres=torch.tensor(float(r.numel()), device=x.device))
        for k, v in sums.items():
            self._eval[k] = self._eval.get(k, 0) + v.detach().double()

    def epoch_metrics(self, s: dict) -> dict[str, torch.Tensor]:
        """Relative L2 and L1 errors over all the epoch's points (ratios of sums, summed over
        devices too) and the RMS of the exact residual on the first batch's points."""
        s = {k: self.all_gather(v).sum() if self.trainer.world_size > 1 else v for k, v in s.items()}
        out = {"rel_l2": (s["err2"] / s["ref2"]).sqrt().float(), "rel_l1": (s["err1"] / s["ref1"]).float()}
        if "res2" in s:
            out["residual_rms"] = (s["res2"] / s["nres"]).sqrt().float()
        return out

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, batch_idx, "val")
        if batch_idx == 0:  # read by the plotting callback at the end of the epoch
            self.example = self.chart_example()

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, batch_idx, "test")

    def median_radius(self) -> float:
        """Half of the evaluation points lie inside this radius."""
        return 0.5 ** (1.0 / self.problem.dim) if self.sampler == "volume" else 0.5

    @torch.no_grad()
    def chart_example(self, n: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
        """(exact, predicted) on a 2-D patch of the sphere at the evaluation points' median radius,
        as (1, 1, n, n) images for the validation plot."""
        x = sphere_chart(self.problem.dim, self.median_radius(), n).reshape(-1, self.problem.dim)
        exact = self.problem.exact(x).float().reshape(1, 1, n, n)
        pred = self.net(x.to(self.device, self.net.lift.weight.dtype)).float().cpu().reshape(1, 1, n, n)
        return exact, pred

    def predict_split(self, datamodule, split: str, out, options: dict) -> dict:
        """u_θ against u* on the split's seeded points (:func:`predict_pinn`)."""
        return predict_pinn(self, datamodule, split, out, options)


def predict_pinn(task: SDGDTask, dm, split: str, out, options: dict) -> dict:
    """``predict.py`` for PINN checkpoints: u_θ and u* on a split's seeded points, errors, residual."""
    from tqdm.auto import tqdm

    from neuropde.callbacks.plots import plot_fields
    from neuropde.tasks.prediction import write_outputs

    if dm.problem.dim != task.problem.dim:
        raise UserError(f"the checkpoint's network takes {task.problem.dim}-dimensional points and the data has "
                        f"dim={dm.problem.dim}: a PINN solves one dimension; predict with data.dim={task.problem.dim}")
    preds, exacts, radii = [], [], []
    task._eval = {}
    for k, (x, u) in enumerate(tqdm(dm.predict_dataloader(split), desc=f"predict {split}")):
        x, u = x.to(task.device), u.to(task.device)
        task._evaluate((x, u), k, split)
        with torch.no_grad():
            preds.append(task.net(x).cpu())
        exacts.append(u.cpu())
        radii.append(x.norm(dim=1).cpu())
    s = task._eval
    pred, exact, radius = torch.cat(preds), torch.cat(exacts), torch.cat(radii)
    metrics = {f"{split}/rel_l2": float((s["err2"] / s["ref2"]).sqrt()),
               f"{split}/rel_l1": float(s["err1"] / s["ref1"]),
               "dim": task.problem.dim, "operator": task.problem.operator, "solution": task.problem.solution,
               "sampler": task.sampler, "split": split, "points": int(pred.numel()),
               "ckpt": options.get("ckpt")}
    if "res2" in s:
        metrics[f"{split}/residual_rms"] = float((s["res2"] / s["nres"]).sqrt())
    # points are not stored: data.seed and the sampler regenerate them
    write_outputs(out, metrics, {"predictions": pred, "targets": exact, "radius": radius},
                  {"split": split, "dim": task.problem.dim, "data_seed": int(dm.cfg["seed"]), "sampler": task.sampler})
    truth, shown = task.chart_example()
    plot_fields(truth[0].numpy(), shown[0].numpy(), out / "plots" / f"{split}_sphere_patch.png",
                title=f"d = {task.problem.dim}: a patch of the sphere of radius {task.median_radius():.3f}")
    return metrics
