"""model=phirom through the framework: data=burgers*, snapshot training with the solver in the loss,
predict.py (latent inversion + rollout past the training horizon), and the errors users meet."""
import pytest
import torch

from neuropde.errors import UserError
from neuropde.run import predict, train
from tests.conftest import compose


def test_phirom_trains_predicts_and_extrapolates(data_root, tmp_path):
    run = tmp_path / "run"
    m = train(compose("train", ["experiment=phirom_tiny", f"run_dir={run}"]))
    assert {"test/rel_l2", "test/rel_l2_extrap", "val/rel_l2"} <= set(m)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["state_dict"]["latents"].shape == (16, 8, 4)  # (train trajectories, train frames, k)
    p = predict(compose("predict", [f"ckpt={run}", f"run_dir={tmp_path / 'pred'}"]))
    assert p["test/rel_l2"] == pytest.approx(m["test/rel_l2"], rel=1e-4)
    assert len(p["test/rel_l2_per_frame"]) == 16 and (tmp_path / "pred" / "plots" / "test_000.png").exists()
    sparse = predict(compose("predict", [f"ckpt={run}", "inversion.fit_fraction=0.25",
                                         f"run_dir={tmp_path / 'sparse'}"]))
    assert sparse["fit_fraction"] == 0.25 and sparse["test/rel_l2"] != p["test/rel_l2"]


def test_warm_up_keeps_solver_gradients_out_of_the_decoder(data_root, tmp_path):
    """Before evolve_start only Ψ learns from L_dyn: with λ = 0 the decoder gets no gradient."""
    from neuropde.run import build_datamodule, build_task

    cfg = compose("train", ["experiment=phirom_tiny", "model.task.lam=0.0", "model.task.evolve_start=5",
                            f"run_dir={tmp_path}"])
    dm = build_datamodule(cfg, progress=False)
    dm.setup("fit")
    task = build_task(cfg, dm.stats)
    batch = next(iter(dm.train_dataloader()))
    task.training_step(batch, 0).backward()
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in task.net.parameters())
    assert task.latents.grad is None or task.latents.grad.abs().max() == 0
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in task.dynamics.parameters())


@pytest.mark.parametrize("override, match", [("model.task.dynamics_target=labels", "solver, latent"),
                                             ("data.generator.solve_resolution=64", "solve_resolution=32"),
                                             ("model.task.train_frames=40", "train_frames=40")])
def test_bad_settings_name_the_fix(data_root, tmp_path, override, match):
    with pytest.raises(UserError, match=match):
        train(compose("train", ["experiment=phirom_tiny", override, f"run_dir={tmp_path}"]))


PARAMETRIC = ["data.name=burgers_nu_tiny", "+data.generator.nu_range=[0.1,0.3]", "+data.generator.fixed_ic=true"]


def test_parametric_burgers_data_store_one_viscosity_per_trajectory(data_root):
    """burgers with nu_range: training ν on a linspace, evaluation ν drawn inside the range, one
    shared initial field, trajectories that are the solver's for their own ν."""
    from neuropde.data.snapshots import SnapshotDataModule
    from neuropde.pde.burgers import Burgers1D
    from neuropde.run import to_dict

    cfg = compose("train", ["experiment=phirom_tiny", *PARAMETRIC])
    dm = SnapshotDataModule(to_dict(cfg.data), data_root, train_frames=8, progress=False)
    dm.setup("fit")
    dm.load("test")
    train_nu, test_nu = dm.params["train"][:, 0], dm.params["test"][:, 0]
    assert torch.allclose(train_nu, torch.linspace(0.1, 0.3, 16))
    assert ((test_nu >= 0.1) & (test_nu <= 0.3)).all() and test_nu.unique().numel() == len(test_nu)
    fields = dm.load("train")
    assert torch.equal(fields[:, 0], fields[:1, 0].expand_as(fields[:, 0]))  # one initial field
    g = cfg.data.generator
    ref = Burgers1D(32, L=g.L, nu=float(train_nu[3])).simulate(fields[3:4, 0].double(), g.dt, [g.dt_snap * 5])
    assert ((fields[3, 5] - ref[0, 0]).norm() / ref.norm()) < 1e-6  # float32 storage
    assert dm.stats["params"] == train_nu[:, None].tolist()
    _, traj, mu = next(iter(dm.test_dataloader()))
    assert mu.shape == (len(traj), 1)


def test_parametric_phirom_steps_each_snapshot_with_its_own_viscosity(data_root, tmp_path):
    """Ψ(α, ν) and the solver in the loss take each snapshot's ν; training and predict run."""
    from neuropde.run import build_datamodule, build_task

    cfg = compose("train", ["experiment=phirom_tiny", *PARAMETRIC, "trainer.max_epochs=6", f"run_dir={tmp_path / 'run'}"])
    dm = build_datamodule(cfg, progress=False)
    dm.setup("fit")
    task = build_task(cfg, dm.stats)
    assert task.dynamics.param_dim == 1
    i, j, u = next(iter(dm.train_dataloader()))
    g = torch.Generator().manual_seed(0)
    velocity, _ = task.solver_velocity(task.latents[i, j] + 0.1, g, i)
    swapped, _ = task.solver_velocity(task.latents[i, j] + 0.1, torch.Generator().manual_seed(0), (i + 1) % 16)
    assert not torch.allclose(velocity, swapped)  # the viscosity of the row matters
    m = train(cfg)
    # a working model: measured 0.069-0.099 (beyond the training frames 0.20-0.26) over seeds 0-2
    # after 6 epochs on the 2-core CPU; 2 epochs gave 0.67-1.0, no better than predicting zero
    assert m["test/rel_l2"] < 0.15 and m["test/rel_l2_extrap"] < 0.4, m
    p = predict(compose("predict", [f"ckpt={tmp_path / 'run'}", f"run_dir={tmp_path / 'pred'}"]))
    assert p["test/rel_l2"] == pytest.approx(m["test/rel_l2"], rel=1e-4)


def test_data_only_baseline_starts_with_a_finite_moderate_loss(data_root, tmp_path):
    """At the zero-initialised latents the baseline's Ψ loss is finite and O(1–1e3), not 1e5+
    (whose squared gradients froze Adam's steps for Ψ)."""
    from neuropde.run import build_datamodule, build_task

    cfg = compose("train", ["experiment=phirom_tiny", "model.task.dynamics_target=latent", f"run_dir={tmp_path}"])
    dm = build_datamodule(cfg, progress=False)
    dm.setup("fit")
    task = build_task(cfg, dm.stats)
    i, j, _ = next(iter(dm.train_dataloader()))
    loss = task.latent_fit_loss(i, j, task.latents[i, j])
    assert torch.isfinite(loss) and loss < 1e3
