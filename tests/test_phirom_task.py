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
