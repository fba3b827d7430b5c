"""Spectral-Refiner: enlarged output operator, residual fine-tuning, error estimate in predict.py."""
import json

import pytest
import torch

from neuropde.models.sfno import SFNO
from neuropde.models.sfno_refine import enlarge_output_operator, nyquist_modes, refine
from neuropde.run import predict, train
from tests.conftest import compose

pytestmark = pytest.mark.usefixtures("one_thread")


def test_enlarged_output_operator_computes_the_same_function():
    torch.manual_seed(0)
    net = SFNO(modes=(4, 4, 3), width=8, n_layers=2, t_latent=5).double()
    with torch.no_grad():  # a trained-looking, non-zero bias
        net.output_operator.sconv.bias.normal_()
    x = torch.randn(2, 6, 20, 20, dtype=torch.float64)
    r, last = net.features(x)
    big = enlarge_output_operator(net.output_operator, (9, 10, 6), delta=1.0)
    assert big.sconv.modes == (9, 10, 6) and big.sconv.weight.shape[-3:] == (18, 20, 6)
    assert torch.allclose(big(r, last, 7), net.output_operator(r, last, 7), atol=1e-12)
    assert nyquist_modes(64, 63, net.output_operator, 5) == (32, 32, 6)
    # the new modes act: perturbing one of them changes the output
    with torch.no_grad():
        big.sconv.weight[0, 0, 8, 0, 0] += 1.0
    assert not torch.allclose(big(r, last, 7), net.output_operator(r, last, 7), atol=1e-6)


@pytest.fixture(scope="module")
def trained_sfno(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("sfno_run")
    metrics = train(compose("train", ["experiment=sfno_tiny", "trainer.max_epochs=30", "optimizer.lr=1e-2",
                                      "logger=none", "plot_every_n_epochs=100", f"run_dir={out}"]))
    return out, metrics


def test_the_sfno_learns_its_tiny_task(trained_sfno):
    """The SFNO's accuracy test of the default suite (the 60-epoch learns-test of tests/test_pipeline.py
    is slow for it): well below the repeat-the-last-frame baseline. Measured on the 2-core Xeon,
    seeds 0 and 1: 0.065 and 0.076 against persistence 0.20."""
    _, m = trained_sfno
    assert m["test/rel_l2"] < 0.5 * m["test/rel_l2_persistence"]


def test_refinement_lowers_the_residual_without_ground_truth(trained_sfno):
    from neuropde import checkpoint
    from neuropde.pde.residual import solver_for
    from neuropde.run import build_datamodule, build_task, predict_config
    from omegaconf import OmegaConf

    run, _ = trained_sfno
    ckpt = checkpoint.read(run)
    pcfg = predict_config(OmegaConf.create({"run_dir": str(run / "p")}), ckpt)
    task = build_task(pcfg, ckpt["neuropde"]["stats"])
    task.load_state_dict(ckpt["state_dict"])
    x, y = next(iter(build_datamodule(pcfg, progress=False).predict_dataloader("test")))
    solver = solver_for(32, 1.0, 1e-3, "fno")
    res = refine(task, x, y.shape[1], solver, 0.2, steps=40)
    assert res.refined.shape == y.shape and torch.isfinite(res.refined).all()
    assert (res.estimate_refined < 0.75 * res.estimate).all(), (res.estimate, res.estimate_refined)  # measured ~0.55
    assert res.history[-1] < res.history[0]
    # and the true error falls with it: the residual is an estimate of the error, not the goal
    error = lambda pred: ((pred - y).flatten(1).norm(dim=1) / y.flatten(1).norm(dim=1))  # noqa: E731
    before, after = error(res.prediction.to(y.dtype)), error(res.refined.to(y.dtype))
    # measured on the 2-core CPU: 0.75-0.84 of the error before, per trajectory
    assert (after < before).all() and (after / before).mean() < 0.92, (before, after)
    # the frozen part is untouched
    after = checkpoint.read(run)["state_dict"]
    assert all(torch.equal(v, task.state_dict()[k]) for k, v in after.items())


def test_the_loaded_model_refines_as_predict_does(trained_sfno):
    import neuropde
    from neuropde.pde.residual import solver_for
    from neuropde.run import build_datamodule

    run, _ = trained_sfno
    model = neuropde.load(run)
    cfg = compose("train", ["experiment=sfno_tiny"])
    x, y = next(iter(build_datamodule(cfg, progress=False).predict_dataloader("test")))
    ours = model.refine(x, y.shape[1], steps=5)
    direct = refine(model, x, y.shape[1], solver_for(32, 1.0, 1e-3, "fno"), 0.2, steps=5)
    assert ours.refined.shape == y.shape and torch.equal(ours.refined, direct.refined)


def test_predict_reports_estimate_and_refined_error(trained_sfno, tmp_path):
    m = predict(compose("predict", [f"ckpt={trained_sfno[0]}", "refine.enabled=true", "refine.steps=20",
                                    f"run_dir={tmp_path}"]))
    for key in ("test/rel_l2", "test/rel_l2_refined", "estimate", "estimate_refined", "error",
                "estimate_spearman", "seconds_per_refined_sample"):
        assert key in m, key
    assert len(m["estimate"]) == len(m["error"]) == m["samples"]
    assert -1 <= m["estimate_spearman"] <= 1
    assert (tmp_path / "plots" / "estimate_vs_error.png").exists()
    assert json.loads((tmp_path / "metrics.json").read_text())["test/rel_l2_refined"] == m["test/rel_l2_refined"]


def test_refine_needs_an_sfno(trained_fno, tmp_path):
    with pytest.raises(TypeError, match="needs an SFNO"):
        predict(compose("predict", [f"ckpt={trained_fno[0]}", "refine.enabled=true", f"run_dir={tmp_path}"]))
