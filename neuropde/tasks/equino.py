"""Training EquiNO (arXiv 2504.07976) in Lightning: Adam on minibatches of macro strains, then
L-BFGS on the whole collocation set (``model=equino``, ``data=rve``).

At the start of training the POD bases are fitted to the data's FE training snapshots (a resumed
or ``init_from`` run keeps the checkpoint's). Every step draws its minibatch from a generator
seeded by (seed, step), so a resumed run sees the same strains. Epochs up to ``adam_epochs`` take
one step of the configured optimizer per batch; later epochs take one ``torch.optim.LBFGS.step``
of ``lbfgs_max_iter`` iterations per batch (its curvature history carries over between calls, so
this is one long L-BFGS run cut into checkpointable pieces). Validation and test compare the
equilibrated stress σ_N = Φ_σ b_σ (σ̂(ε(b_u)) for the energy variant), the displacement, σ̄ and C̄
with the FE snapshots; ``val/rel_l2`` is the median over samples of the whole stress field's
relative L2 error.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from neuropde.errors import UserError
from neuropde.losses import rel_l2
from neuropde.models.equino import EquiNO, data_loss, energy_loss, relative_errors
from neuropde.models.pod import PODBases
from neuropde.pde.elasticity import ip_image, latin_hypercube
from neuropde.tasks.base import BaseTask
from neuropde.tasks.epoch_metrics import EpochMetrics
from neuropde.tasks.pinn import step_generator

log = logging.getLogger(__name__)

LOSSES = ("physics", "data", "energy")
STRESS = ("sxx", "syy", "sxy")


class EquiNOTask(EpochMetrics, BaseTask):
    """Fit an :class:`~neuropde.models.equino.EquiNO` on one RVE.

    Parameters
    ----------
    net : EquiNO (usually :meth:`EquiNO.for_mesh` with placeholder bases).
    loss : ``physics`` (EquiNO: no labels), ``data`` (baseline: the FE training snapshots'
        coefficients) or ``energy`` (deep-energy variant, displacement branch only).
    pod_snapshots : training snapshots the bases are built from (``None``: all).
    collocation, collocation_seed, strain_bound : the Latin-hypercube set of macro strains the
        physics and energy losses are evaluated on (reference: seed 24; box ±0.04).
    batch_size : macro strains per Adam step (reference: 10).
    seed : seeds the minibatches; adam_epochs : epochs of the first stage.
    lbfgs_max_iter, lbfgs_history : L-BFGS iterations per training step and correction pairs.
    compile : ``torch.compile`` the full-batch loss of the L-BFGS stage. The constitutive law is a
        chain of elementwise operations on (strains × integration points) tensors that the compiler
        fuses: measured 8.7x faster per evaluation on one CPU core (512 strains, 16×16 RVE) after
        about 20 s of compilation. Falls back to eager mode, with a warning, when compiling fails.
    """

    def __init__(self, net: EquiNO, optimizer: dict, scheduler: dict | None = None, stats: dict | None = None,
                 loss: str = "physics", pod_snapshots: int | None = None, collocation: int = 512,
                 collocation_seed: int = 24, strain_bound: float = 0.04, batch_size: int = 10, seed: int = 0,
                 adam_epochs: int = 20, lbfgs_max_iter: int = 20, lbfgs_history: int = 50, compile: bool = False):
        super().__init__(optimizer, scheduler, stats)
        if loss not in LOSSES:
            raise UserError(f"model.task.loss={loss}: choose one of {', '.join(LOSSES)}")
        self.net, self.loss_name, self.pod_snapshots = net, loss, pod_snapshots
        self.register_buffer("strains", torch.tensor(latin_hypercube(collocation, collocation_seed, strain_bound)))
        self.batch_size, self.seed, self.adam_epochs = int(batch_size), int(seed), int(adam_epochs)
        self.lbfgs_max_iter, self.lbfgs_history = int(lbfgs_max_iter), int(lbfgs_history)
        self.labels: dict[str, torch.Tensor] | None = None  # FE training snapshots, for loss=data
        self.compile = bool(compile)
        self._full_batch_loss = None  # the full-batch objective, compiled on first use when asked to
        self.compiled = False
        self.automatic_optimization = False
        self.persistence = False
        self._eval: dict[str, list] = {}

    # ----------------------------------------------------------------------------------- setup
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if stage != "fit" or dm is None:
            return
        check_mesh(self.net, dm.solver)
        train = dm.snapshots("train")
        if not bool(self.net.fitted):  # a resumed or init_from run keeps the checkpoint's bases
            n = len(train["E_bar"]) if self.pod_snapshots is None else int(self.pod_snapshots)
            if n > len(train["E_bar"]):
                raise UserError(f"model.task.pod_snapshots={n} but the training split has {len(train['E_bar'])} "
                                f"snapshots: lower it or raise data.samples.train")
            self.net.set_bases(PODBases.from_snapshots(dm.solver, {k: v[:n] for k, v in train.items()},
                                                       self.net.phi_u.shape[1]))
        if self.loss_name == "data":
            self.labels = {k: torch.as_tensor(train[k]) for k in ("E_bar", "u_fluct", "sigma")}

    def stress(self, E_bar: torch.Tensor) -> torch.Tensor:
        """The predicted stress field (N, n_ip, 3): the stress branch's equilibrated Φ_σ b_σ, or, for
        the energy variant (which trains only the displacement branch), σ̂(ε(b_u))."""
        return self.net.constitutive_stress(E_bar) if self.loss_name == "energy" else self.net.equilibrated_stress(E_bar)

    def forward(self, E_bar: torch.Tensor) -> torch.Tensor:
        """Homogenised stress σ̄ (N, 3) of macro strains (N, 3): EquiNO's fast path (stress branch only)."""
        if self.loss_name == "energy":
            return torch.einsum("q,nqc->nc", self.net.w, self.stress(E_bar)) / self.net.w.sum()
        return self.net.homogenized_stress(E_bar)

    def tangent(self, E_bar: torch.Tensor) -> torch.Tensor:
        """C̄ = ∂σ̄/∂(Ē_xx, Ē_yy, γ̄) (N, 3, 3) by automatic differentiation, also in inference mode
        (see :meth:`~neuropde.models.equino.EquiNO.homogenized_tangent`)."""
        if self.loss_name != "energy":
            return self.net.homogenized_tangent(E_bar)
        with torch.inference_mode(False), torch.enable_grad():
            return torch.func.vmap(torch.func.jacrev(lambda e: self(e[None])[0]))(self.net._input(E_bar).clone())

    # -------------------------------------------------------------------------------- training
    def objective(self, idx: torch.Tensor | None) -> torch.Tensor:
        """The configured loss on the rows ``idx`` of the training strains (all when None)."""
        if self.loss_name == "data":
            sub = {k: (v if idx is None else v[idx.cpu()]) for k, v in self.labels.items()}
            return data_loss(self.net, sub["E_bar"], {k: sub[k].numpy() for k in ("u_fluct", "sigma")})
        E = self.strains if idx is None else self.strains[idx]
        return self.net.physics_loss(E) if self.loss_name == "physics" else energy_loss(self.net, E)

    def full_batch_loss(self) -> torch.Tensor:
        """The objective on every training strain (L-BFGS), compiled once when ``compile`` is set."""
        if self._full_batch_loss is None:
            self._full_batch_loss = lambda: self.objective(None)  # noqa: E731
            if self.compile and self.loss_name != "data":
                compiled = torch.compile(self.objective, dynamic=False)
                try:
                    compiled(None)
                    self._full_batch_loss = lambda: compiled(None)  # noqa: E731
                    self.compiled = True
                except Exception as err:  # no C++ compiler, unsupported platform: eager still works
                    log.warning("torch.compile of the EquiNO loss failed (%s); continuing in eager mode",
                                str(err).splitlines()[0] if str(err) else type(err).__name__)
        return self._full_batch_loss()

    def trained_parameters(self) -> list:
        # the energy variant never uses the stress branch: leaving it out keeps L-BFGS's history clean
        return list(self.net.net_u.parameters()) if self.loss_name == "energy" else list(self.net.parameters())

    def optimizer_batch_size(self) -> int:
        return self.batch_size  # every device draws the same minibatch of macro strains

    def scheduled_steps(self) -> int:
        # the first stage only (L-BFGS keeps lr = 1); batches are not counted yet at this point
        return max(self.adam_epochs * int(self.trainer.datamodule.cfg["loader"]["steps_per_epoch"]), 1)

    def configure_optimizers(self):
        first, sched = self.optimizer_and_scheduler()
        eps = torch.finfo(torch.float64).eps  # the iteration budget decides, as in the reference
        lbfgs = torch.optim.LBFGS(self.trained_parameters(), lr=1.0, max_iter=self.lbfgs_max_iter,
                                  history_size=self.lbfgs_history, line_search_fn="strong_wolfe",
                                  tolerance_grad=eps, tolerance_change=eps)
        return [first, lbfgs] if sched is None else ([first, lbfgs], [sched])

    def training_step(self, batch, batch_idx):
        first, lbfgs = self.optimizers()
        n = len(self.labels["E_bar"]) if self.loss_name == "data" else len(self.strains)
        if self.current_epoch < self.adam_epochs:
            g = step_generator(self.seed, self.global_step, "cpu")
            idx = torch.randperm(n, generator=g)[:self.batch_size].to(self.strains.device)

            def closure():
                first.zero_grad()
                value = self.objective(idx)
                self.manual_backward(value)
                return value

            loss = first.step(closure)
            sched = self.lr_schedulers()
            if sched is not None:
                sched.step()
        else:
            def closure():
                lbfgs.zero_grad()
                value = self.full_batch_loss()
                self.manual_backward(value)
                return value

            loss = lbfgs.step(closure)
        self.check_finite(loss)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    # ------------------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def _evaluate(self, batch: dict, stage: str) -> None:
        E = batch["E_bar"]
        sig_n = self.stress(E)
        per, _ = relative_errors(sig_n, batch["sigma"])
        per_u, _ = relative_errors(self.net.displacement(E), batch["u_fluct"])
        with torch.enable_grad():
            C = self.tangent(E)
        cols = {"stress": rel_l2(sig_n, batch["sigma"], reduce=False),
                "sigma_bar": rel_l2(self(E), batch["sigma_bar"], reduce=False),
                "C_bar": rel_l2(C, batch["C_bar"], reduce=False)}
        cols.update({f"rel_err_{c}": torch.from_numpy(per[:, i]) for i, c in enumerate(STRESS)})
        cols.update({f"rel_err_{c}": torch.from_numpy(per_u[:, i]) for i, c in enumerate(("ux", "uy"))})
        for k, v in cols.items():
            self._eval.setdefault(k, []).append(v.detach().double().cpu())
        if stage == "val" and "example" not in self._eval:
            # (1, 3, X, Y): σxx, σyy, σxy, for the plot callback
            self._eval["example"] = tuple(ip_image(f[:1].cpu(), len(self.net.nodes)).float()
                                          for f in (batch["sigma"], sig_n))

    def epoch_metrics(self, ev: dict) -> dict[str, float]:
        """Medians over the epoch's samples: ``rel_l2`` of the whole stress field, then
        ``median_rel_err_*`` of each stress and displacement component, σ̄ and C̄."""
        med = {k: torch.cat(v).median().item() for k, v in ev.items()}
        out = {"rel_l2": med.pop("stress")}
        out.update({f"median_{k}" if k.startswith("rel_err") else f"median_rel_err_{k}": v for k, v in med.items()})
        return out

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    def predict_split(self, datamodule, split: str, out, options: dict) -> dict:
        """σ_N, σ̄ and C̄ on the split's macro strains against FE (:func:`predict_equino`)."""
        return predict_equino(self, datamodule, split, out, options)


def check_mesh(net: EquiNO, solver) -> None:
    """The bases live on one mesh: refuse data whose mesh (nodes, phases) is another."""
    same = (net.nodes.shape == torch.Size(solver.mesh.nodes.shape) and len(net.w) == len(solver.w)
            and torch.equal(net.phase_ip.cpu(), torch.as_tensor(solver.phase_ip))
            and np.allclose(net.nodes.cpu().numpy(), solver.mesh.nodes))
    if not same:
        raise UserError("this EquiNO's POD bases belong to another RVE mesh than the data's (geometry, "
                        "resolution or element differ): use the data set it was trained on, or train anew")


def predict_equino(task: EquiNOTask, dm, split: str, out, options: dict) -> dict:
    """``predict.py`` for EquiNO checkpoints: σ_N, σ̄ and C̄ on a split's macro strains against FE."""
    import time

    from neuropde.callbacks.plots import plot_fields
    from neuropde.tasks.prediction import write_outputs

    check_mesh(task.net, dm.solver)
    snaps = {k: torch.as_tensor(v) for k, v in dm.snapshots(split).items()}
    E = snaps["E_bar"].to(task.device)
    with torch.no_grad():
        task._evaluate({k: v.to(task.device) for k, v in snaps.items()}, split)
        sig_n = task.stress(E).cpu()
    start = time.perf_counter()
    sig_bar = task(E).detach()
    C_bar = task.tangent(E).detach()
    seconds = time.perf_counter() - start
    ev = {k: v for k, v in task._eval.items() if k != "example"}
    task._eval = {}
    named = task.epoch_metrics(ev)  # the medians that validation and test log
    metrics = {f"{split}/rel_l2": named.pop("rel_l2"), "split": split, "samples": len(E),
               "ckpt": options.get("ckpt"), "seconds_per_macro_point": seconds / len(E)}
    metrics.update({f"{split}/{k}": v for k, v in named.items()})
    metrics["per_sample"] = {k: torch.cat(v).tolist() for k, v in ev.items() if k != "stress"}
    arrays = {"E_bar": E.cpu(), "sigma": sig_n, "sigma_fe": snaps["sigma"], "sigma_bar": sig_bar.cpu(),
              "sigma_bar_fe": snaps["sigma_bar"], "C_bar": C_bar.cpu(), "C_bar_fe": snaps["C_bar"]}
    write_outputs(out, metrics, arrays, {"split": split, "geometry": str(dm.cfg["generator"]["geometry"]),
                                         "resolution": int(dm.cfg["resolution"])})
    truth, pred = (ip_image(f, len(task.net.nodes)) for f in (snaps["sigma"], sig_n))
    for i in range(min(int(options.get("n_plots", 2)), len(E))):
        plot_fields(truth[i].numpy(), pred[i].numpy(), out / "plots" / f"{split}_{i:03d}.png",
                    title=f"{split} sample {i}: σxx, σyy, σxy (frames 1-3) at Ē = "
                          f"{np.array2string(E[i].cpu().numpy(), precision=4)}")
    return metrics
