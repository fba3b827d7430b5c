"""Recursive observer (model=observer): measurement models, the recursion, training and assimilate=true."""
import h5py
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from neuropde.data.measurement import MeasurementModel, random_points
from neuropde.errors import UserError
from neuropde.models.fno import FNO
from neuropde.models.observer import RecursiveObserver
from neuropde.run import predict, train
from tests.conftest import compose


def tiny_observer(seed=0, gain="innovation", **kw):
    torch.manual_seed(seed)
    return RecursiveObserver(FNO(1, 1, modes=(4,), width=8, n_layers=1), modes=(4,), gain_width=8,
                             gain_layers=1, gain=gain, **kw)


def correction(net, pred, y, mask):
    """The analysis minus the prediction at one measured step (every trajectory active)."""
    state, _ = net.correct(pred, y, mask, torch.ones(pred.shape[0], dtype=torch.bool))
    return state - pred


# ------------------------------------------------------------------------------- measurements
def test_random_points_observe_the_requested_share_per_trajectory():
    g = torch.Generator().manual_seed(0)
    mask = random_points(3, (10, 20), torch.tensor([0.25, 0.05, 1.0]), g)
    assert mask.shape == (3, 10, 20)
    assert mask.flatten(1).sum(1).tolist() == [50.0, 10.0, 200.0]
    assert not torch.equal(mask[0], random_points(1, (10, 20), torch.tensor([0.25]), g)[0])  # drawn per call


def test_measurement_model_masks_and_times():
    sub = MeasurementModel(operator="subsample", stride=4).spatial_mask(2, (16,))
    assert sub[0].nonzero().flatten().tolist() == [0, 4, 8, 12] and torch.equal(sub[0], sub[1])
    assert MeasurementModel(operator="full").spatial_mask(1, (5, 5)).sum() == 25
    every = MeasurementModel(every=5).time_mask(2, 12)
    assert every[0].nonzero().flatten().tolist() == [4, 9]  # steps 5 and 10 after the start
    assert not MeasurementModel(every=0).time_mask(1, 7).any()
    q = MeasurementModel(probability=0.3).time_mask(200, 50, torch.Generator().manual_seed(1)).float().mean()
    assert abs(float(q) - 0.3) < 0.02


def test_measure_adds_relative_noise_only_where_observed():
    traj = torch.randn(4, 30, 64) * 3.0
    model = MeasurementModel(operator="random", fraction=0.5, noise=0.1, every=5)
    y, mask = model.measure(traj, warmup=10, generator=torch.Generator().manual_seed(0), scale=3.0)
    assert torch.all(y[mask == 0] == 0)
    assert mask[:, :10].flatten(2).sum(2).eq(32).all()           # warm-up: every frame measured
    assert mask[:, 10:].flatten(2).amax(2)[0].nonzero().flatten().tolist() == [4, 9, 14, 19]
    noise = (y - traj)[mask == 1]
    assert abs(float(noise.std()) - 0.3) < 0.03                   # σ · scale


def test_measurement_errors_name_the_option():
    with pytest.raises(UserError, match="operator"):
        MeasurementModel(operator="sparse")
    with pytest.raises(UserError, match="fraction"):
        MeasurementModel(fraction=0.0)
    with pytest.raises(UserError, match="unknown measurement option"):
        MeasurementModel.from_config({"sigma": 0.1})


# ---------------------------------------------------------------------------------- recursion
def test_without_measurements_the_rollout_is_the_open_loop_prediction(one_thread):
    net = tiny_observer().eval()
    y = torch.randn(2, 6, 16)
    mask = torch.zeros_like(y)
    mask[:, 0] = 1
    with torch.no_grad():
        out = net.rollout(y, mask)
        z0 = out["states"][:, :1]
        assert torch.allclose(out["states"][:, 1:], net(z0, steps=5), atol=1e-6)
    assert torch.isnan(out["gate"][1:]).all() and torch.isfinite(out["gate"][0])


def test_only_trajectories_with_a_measurement_are_corrected(one_thread):
    net = tiny_observer().eval()
    y = torch.randn(2, 3, 16)
    mask = torch.ones_like(y)
    mask[1, 2] = 0  # trajectory 1 has no measurement at step 2
    with torch.no_grad():
        out = net.rollout(y, mask)
    assert torch.equal(out["states"][1, 2], out["predictions"][1, 2])
    assert not torch.equal(out["states"][0, 2], out["predictions"][0, 2])


def test_gate_starts_near_its_bias(one_thread):
    net = tiny_observer(gate_bias=-2.0)
    y = torch.randn(4, 2, 32)
    gate = net.rollout(y, torch.ones_like(y))["gate"]
    assert 0.03 < float(gate.mean()) < 0.4  # sigmoid(-2) = 0.12, plus the random FNO's spread


def test_truncated_backpropagation_cuts_the_gradient_path(one_thread):
    net = tiny_observer()
    grads = {}
    for tbptt in (None, 2):
        y = torch.randn(1, 4, 16, generator=torch.Generator().manual_seed(0)).requires_grad_()
        mask = torch.zeros(1, 4, 16)
        mask[:, 0] = 1
        net.rollout(y, mask, tbptt=tbptt)["states"][:, 3].sum().backward()
        grads[tbptt] = y.grad[0, 0].abs().sum()
    assert grads[None] > 0 and grads[2] == 0


# ------------------------------------------------------------------------------------- the gain
def _zero_innovation_case(seed=0):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(3, 1, 32, generator=g)
    mask = (torch.rand(3, 1, 32, generator=g) < 0.4).float()
    y = torch.where(mask > 0, pred, torch.randn(3, 1, 32, generator=g))  # agrees where measured
    return pred, y, mask


@pytest.mark.parametrize("seed, rank", [(0, None), (1, None), (0, 3)])
def test_innovation_gain_does_not_correct_a_prediction_the_measurements_agree_with(one_thread, seed, rank):
    net = tiny_observer(seed, gain_rank=rank)
    with torch.no_grad():  # a gate that is not near its bias: the zero must not come from the gate
        net.gain.gate.fno.projection.fcs[-1].bias.fill_(3.0)
        net.gain.spectral.weight.normal_()
    pred, y, mask = _zero_innovation_case(seed)
    with torch.no_grad():
        assert torch.equal(correction(net, pred, y, mask), torch.zeros_like(pred))


def test_gated_gain_corrects_even_at_zero_innovation(one_thread):
    """The first gain (gain=gated) has no observer structure: the candidate FNO's biases and
    activations move the state although the measurements agree with it."""
    net = tiny_observer(gain="gated")
    pred, y, mask = _zero_innovation_case()
    with torch.no_grad():
        assert correction(net, pred, y, mask).abs().amax() > 1e-3


@pytest.mark.parametrize("gain, rank", [("innovation", None), ("innovation", 3), ("gated", None)])
def test_correction_is_linear_in_the_innovation_at_fixed_prediction_and_mask(one_thread, gain, rank):
    net = tiny_observer(gain=gain, gain_rank=rank)
    with torch.no_grad():
        net.gain.gate.fno.projection.fcs[-1].bias.fill_(0.5)
        if gain == "innovation":
            net.gain.spectral.weight.normal_()
    g = torch.Generator().manual_seed(3)
    pred, nu1, nu2 = (torch.randn(2, 1, 32, generator=g) for _ in range(3))
    mask = (torch.rand(2, 1, 32, generator=g) < 0.5).float()
    nu1, nu2 = nu1 * mask, nu2 * mask
    with torch.no_grad():
        c = lambda nu: net.gain(pred, nu, mask)[0]  # noqa: E731
        combined, separate = c(2.0 * nu1 - 0.5 * nu2), 2.0 * c(nu1) - 0.5 * c(nu2)
    scale = separate.abs().amax()
    assert scale > 1e-2
    if gain == "innovation":
        assert torch.allclose(combined, separate, atol=1e-5 * float(scale))
        assert torch.allclose(c(-3.0 * nu1), -3.0 * c(nu1), atol=1e-5 * float(scale))
    else:  # the gated form is not a gain applied to the innovation
        assert not torch.allclose(combined, separate, atol=1e-2 * float(scale))


def test_innovation_gate_sees_the_prediction_and_the_mask_only(one_thread):
    net = tiny_observer()
    pred, _, mask = _zero_innovation_case()
    with torch.no_grad():
        _, gate1 = net.gain(pred, torch.randn_like(pred) * mask, mask)
        _, gate2 = net.gain(pred, torch.randn_like(pred) * mask, mask)
    assert torch.equal(gate1, gate2)


@pytest.mark.parametrize("rank", [None, 3])
def test_trained_innovation_gain_still_does_not_correct_at_zero_innovation(one_thread, rank):
    """Training moves every weight of the gain (not only the initial identity K), and the
    correction stays exactly zero at ν = 0 and linear in ν."""
    net = tiny_observer(gain_rank=rank)
    before = {k: v.detach().clone() for k, v in net.gain.named_parameters()}
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    x = torch.linspace(0, 2 * torch.pi, 33)[:-1]
    for _ in range(15):
        phase = torch.rand(4, 1, 1, generator=g) * 6.28
        truth = torch.sin(x + phase + 0.3 * torch.arange(6).reshape(1, 6, 1))  # (4, 6, 32) travelling waves
        mask = (torch.rand(4, 6, 32, generator=g) < 0.5).float()
        out = net.rollout(truth * mask + 0.05 * torch.randn(truth.shape, generator=g) * mask, mask)
        loss = (out["states"] - truth).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    moved = [k for k, v in net.gain.named_parameters() if not torch.equal(v, before[k])]
    assert any(k.startswith("spectral") for k in moved) and any(k.startswith("gate") for k in moved)
    net.eval()
    pred, y, mask = _zero_innovation_case()
    with torch.no_grad():
        assert torch.equal(correction(net, pred, y, mask), torch.zeros_like(pred))
        nu = torch.randn_like(pred) * mask
        c = lambda v: net.gain(pred, v, mask)[0]  # noqa: E731
        assert torch.allclose(c(1.5 * nu - nu), 0.5 * c(nu), atol=1e-5 * float(c(nu).abs().amax()))


def test_unknown_gain_names_the_options():
    with pytest.raises(UserError, match="gated, innovation"):
        tiny_observer(gain="kalman")
    with pytest.raises(UserError, match="gain=innovation"):
        tiny_observer(gain="gated", gain_rank=2)


def test_a_fresh_innovation_gain_nudges_by_the_gate_bias(one_thread):
    """K starts as the identity (P K = identity with r filters): at the start the correction is the
    gate's value times the innovation, ≈ 0.12 ν, so a fresh gain barely disturbs the predictor."""
    for rank in (None, 3):
        net = tiny_observer(gain_rank=rank)
        if rank is not None:
            with torch.no_grad():
                net.gain.spectral.weight.zero_()
        pred, y, mask = _zero_innovation_case()
        nu = mask * (torch.randn_like(pred) - pred)
        with torch.no_grad():
            c, gate = net.gain(pred, nu, mask)
        ratio = c[mask > 0] / nu[mask > 0]
        assert 0.03 < float(ratio.min()) and float(ratio.max()) < 0.4


def test_a_config_saved_before_the_gain_option_rebuilds_the_gated_model(one_thread):
    """Old checkpoints hold no model.net.gain: their config must rebuild the network they were
    trained as (gated), so that their weights load; the config names its gain explicitly."""
    from hydra.utils import instantiate

    cfg = OmegaConf.to_container(compose("train", ["experiment=observer_tiny"]).model.net, resolve=True)
    assert cfg["gain"] in ("gated", "innovation")
    old = {k: v for k, v in cfg.items() if k not in ("gain", "gain_rank")}
    trained_then = instantiate(old)
    assert trained_then.gain_kind == "gated"
    weights = {k: v for k, v in trained_then.state_dict().items() if "_metadata" not in k}  # as the task saves
    instantiate(old).load_state_dict(weights)  # strict: the same parameters
    with pytest.raises(RuntimeError, match="gain"):
        instantiate({**cfg, "gain": "innovation"}).load_state_dict(weights)


# ------------------------------------------------------------------------- training and predict
@pytest.fixture(scope="module")
def trained_observer(tmp_path_factory, data_root):
    run = tmp_path_factory.mktemp("observer")
    metrics = train(compose("train", ["experiment=observer_tiny", "trainer.max_epochs=15", "scheduler=onecycle",
                                      "optimizer.lr=1e-2", "logger=none", "plot_every_n_epochs=100",
                                      f"run_dir={run}"]))
    return run, metrics


def test_the_observer_learns_to_assimilate(trained_observer):
    """The observer's accuracy test of the default suite (its 60-epoch learns-test in
    tests/test_pipeline.py is slow). Measured on the 2-core Xeon, seeds 0, 1, 2 (15 epochs, ~9 s):
    assimilated final 0.10, 0.21, 0.10 against open loop 0.71, 1.02, 0.53."""
    _, m = trained_observer
    assert m["test/rel_l2_final"] < 0.4
    assert m["test/rel_l2_final"] < 0.5 * m["test/rel_l2_openloop_final"]


def test_training_reports_assimilated_and_open_loop_errors(trained_observer):
    _, m = trained_observer
    for key in ("test/rel_l2", "test/rel_l2_final", "test/rel_l2_openloop", "test/rel_l2_openloop_final",
                "test/gate", "val/rel_l2"):
        assert np.isfinite(m[key]), key


def test_predict_assimilates_whole_trajectories(trained_observer, tmp_path):
    run, _ = trained_observer
    out = tmp_path / "assim"
    m = predict(compose("predict", [f"ckpt={run}", "assimilate.enabled=true", f"run_dir={out}"]))
    assert m["warmup"] == 4 and m["steps"] == 24 - 4
    assert len(m["rel_l2_per_step"]) == m["steps"] == len(m["rel_l2_openloop_per_step"])
    with h5py.File(out / "assimilation.h5") as f:
        assert f["assimilated"].shape == f["truth"].shape == f["open_loop"].shape == (2, 24, 32)
        truth, mask = f["truth"][...], f["mask"][...]
    assert (out / "plots" / "error_vs_step.png").exists() and (out / "plots" / "assimilation_000.png").exists()
    # the same measurements from a user's file (NaN = unobserved) give the same estimate
    y = np.where(mask > 0, h5py.File(out / "assimilation.h5")["y"][...], np.nan)
    with h5py.File(tmp_path / "meas.h5", "w") as f:
        f["y"], f["truth"] = y, truth
    m2 = predict(compose("predict", [f"ckpt={run}", "assimilate.enabled=true",
                                     f"assimilate.file={tmp_path / 'meas.h5'}", f"run_dir={tmp_path / 'file'}"]))
    assert m2["rel_l2_final"] == pytest.approx(m["rel_l2_final"], rel=1e-5)
    # and from Python: the loaded model's assimilate gives predict.py's estimates
    import neuropde

    with h5py.File(out / "assimilation.h5") as f:
        y, mask, assimilated = (torch.from_numpy(f[k][...]) for k in ("y", "mask", "assimilated"))
    torch.testing.assert_close(neuropde.load(run).assimilate(y, mask), assimilated, rtol=1e-5, atol=1e-6)


def test_assimilation_file_errors_name_the_layout(trained_observer, tmp_path):
    run, _ = trained_observer
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f["y"] = np.zeros((2, 24, 31), np.float32)
    with pytest.raises(UserError, match=r"\(N, T, 32\)"):
        predict(compose("predict", [f"ckpt={run}", "assimilate.enabled=true",
                                    f"assimilate.file={tmp_path / 'bad.h5'}", f"run_dir={tmp_path / 'o'}"]))


def test_assimilate_needs_an_observer_checkpoint(trained_fno, tmp_path):
    run, _ = trained_fno
    with pytest.raises(UserError, match="model=fno does not assimilate"):
        predict(compose("predict", [f"ckpt={run}", "assimilate.enabled=true", f"run_dir={tmp_path}"]))
