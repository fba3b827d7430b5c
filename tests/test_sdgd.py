"""SDGD PINNs on the unit ball: exact solutions, samplers, second derivatives, estimators."""
import math

import pytest
import torch

from neuropde.errors import UserError
from neuropde.models.sdgd_pinn import BallPINN, residual_loss
from neuropde.pde.highdim import BallProblem, sample_ball


def hessian_diagonals(f, x: torch.Tensor) -> torch.Tensor:
    """Diagonal of the Hessian of a scalar function of one point, at each row of x: (n, d)."""
    return torch.stack([torch.diagonal(torch.autograd.functional.hessian(lambda z: f(z[None])[0], xi)) for xi in x])


@pytest.mark.parametrize("solution", ["two_body", "three_body"])
@pytest.mark.parametrize("operator", ["poisson", "allen_cahn", "sine_gordon"])
def test_closed_form_forcing_is_the_operator_of_the_exact_solution(solution, operator):
    torch.manual_seed(0)
    problem = BallProblem(7, operator, solution, coef_seed=3)
    x = sample_ball(6, 7, "radius", dtype=torch.float64)
    lap = hessian_diagonals(problem.exact, x).sum(1)
    assert torch.allclose(problem.exact_laplacian(x), lap, atol=1e-10)
    u = problem.exact(x)
    expected = {"poisson": lap, "allen_cahn": lap + u - u ** 3, "sine_gordon": lap + torch.sin(u)}[operator]
    assert torch.allclose(problem.forcing(x), expected, atol=1e-10)
    sphere = x / x.norm(dim=1, keepdim=True)
    assert problem.exact(sphere).abs().max() < 1e-12            # u* = 0 on the boundary


def test_coefficients_follow_the_seed_and_bad_options_name_the_choices():
    assert torch.equal(BallProblem(50, coef_seed=1).coef, BallProblem(50, coef_seed=1).coef)
    assert not torch.equal(BallProblem(50, coef_seed=1).coef, BallProblem(50, coef_seed=2).coef)
    with pytest.raises(UserError, match="poisson"):
        BallProblem(10, operator="heat")
    with pytest.raises(UserError, match="dim"):
        BallProblem(2, solution="three_body")
    with pytest.raises(UserError, match="volume"):
        sample_ball(4, 3, "cube")


def test_volume_sampler_is_uniform_in_volume_and_radius_sampler_uniform_in_radius():
    d, n = 50, 20_000
    g = torch.Generator().manual_seed(0)
    r = sample_ball(n, d, "volume", g, dtype=torch.float64).norm(dim=1)
    assert r.max() < 1
    for q in (0.1, 0.5, 0.9):  # P(r < q^{1/d}) = q for the volume; 4 binomial standard deviations
        assert abs(float((r < q ** (1 / d)).double().mean()) - q) < 4 * math.sqrt(q * (1 - q) / n)
    r = sample_ball(n, d, "radius", g, dtype=torch.float64).norm(dim=1)
    assert abs(float(r.mean()) - 0.5) < 4 * math.sqrt(1 / 12 / n)


@pytest.mark.parametrize("activation,scale", [("tanh", 1.0), ("sin", 1.0), ("tanh", "sqrt_dim")])
def test_forward_mode_second_derivatives_match_autograd(activation, scale):
    torch.manual_seed(0)
    d = 9
    net = BallPINN(d, width=16, depth=3, activation=activation, input_scale=scale).double()
    x = sample_ball(5, d, "radius", dtype=torch.float64)
    hess = hessian_diagonals(net, x)
    dims = torch.tensor([7, 0, 3])
    assert torch.allclose(net.second_derivatives(x, dims), hess[:, dims], atol=1e-12)
    u, lap = net.laplacian(x)
    assert torch.allclose(lap, hess.sum(1), atol=1e-12) and torch.allclose(u, net(x))
    _, chunked = net.laplacian(x, chunk=4)                      # 3 chunks, checkpointed under grad
    assert torch.allclose(chunked, lap, atol=1e-12)
    chunked.sum().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    net.laplacian(x)[1].sum().backward()
    assert all(torch.allclose(a, p.grad, atol=1e-12) for a, p in zip(grads, net.parameters()))
    assert net(x / x.norm(dim=1, keepdim=True)).abs().max() < 1e-12   # hard boundary condition


def _gradient(net, loss) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(net.parameters()))])


def _z_scores(estimator: str, samples: int = 1500) -> torch.Tensor:
    """(mean of sampled gradients − full gradient) / standard error, per parameter, at fixed points."""
    torch.manual_seed(0)
    d, B = 20, 4
    problem = BallProblem(d, "poisson")
    net = BallPINN(d, width=8, depth=2).double()
    with torch.no_grad():  # second derivatives that differ between dimensions and outweigh the forcing,
        net.lift.weight *= torch.linspace(0.2, 3.0, d)        # so that Var R_I (the bias) is visible
        net.rest[-1].weight *= 100
    x = sample_ball(16, d, "radius", dtype=torch.float64)
    full = _gradient(net, residual_loss(net, problem, x, "full")[0])
    g = torch.Generator().manual_seed(1)
    draws = torch.stack([_gradient(net, residual_loss(net, problem, x, estimator, B, g)[0]) for _ in range(samples)])
    se = draws.std(0) / math.sqrt(samples)
    return (draws.mean(0) - full) / se


def test_independent_index_sets_give_an_unbiased_gradient_and_one_set_does_not():
    z = _z_scores("unbiased")
    # ~250 parameters: the mean of the sampled gradients is within its standard error of the full
    # gradient (z ~ N(0, 1) per component)
    assert (z * z).mean() < 1.5 and z.abs().max() < 5.0
    z_biased = _z_scores("biased")               # the same test detects the bias of one index set
    assert (z_biased * z_biased).mean() > 5


def test_training_points_and_dimensions_repeat_within_a_step_and_change_between_steps():
    from neuropde.tasks.pinn import step_generator

    draw = lambda step: (sample_ball(4, 30, "volume", step_generator(0, step, "cpu")),
                         torch.randperm(30, generator=step_generator(0, step, "cpu")))
    (a, i), (b, j), (c, _) = draw(5), draw(5), draw(6)
    assert torch.equal(a, b) and torch.equal(i, j) and not torch.equal(a, c)


def test_predict_reproduces_the_test_error_and_refuses_another_dimension(data_root, tmp_path):
    import json

    from neuropde.run import predict, train
    from tests.conftest import compose

    metrics = train(compose("train", ["experiment=sdgd_pinn_tiny", f"run_dir={tmp_path / 'run'}", "logger=none"]))
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    out = predict(compose("predict", [f"ckpt={ckpt}", f"run_dir={tmp_path / 'pred'}"]))
    assert out["test/rel_l2"] == pytest.approx(metrics["test/rel_l2"], rel=1e-5)
    assert out["test/residual_rms"] == pytest.approx(metrics["test/residual_rms"], rel=1e-4)
    assert json.loads((tmp_path / "pred" / "metrics.json").read_text())["points"] == 200
    assert (tmp_path / "pred" / "predictions.h5").exists() and list((tmp_path / "pred" / "plots").glob("*.png"))
    with pytest.raises(UserError, match="data.dim=10"):
        predict(compose("predict", [f"ckpt={ckpt}", "+data.dim=20", f"run_dir={tmp_path / 'pred2'}"]))


def test_trains_in_float64(data_root, tmp_path, monkeypatch):
    """trainer.precision=64-true: weights, collocation points, losses and outputs are float64."""
    from neuropde.run import train
    from neuropde.tasks import pinn
    from tests.conftest import compose

    seen = {"params": set(), "loss": set(), "output": set()}
    step, forward = pinn.SDGDTask.training_step, BallPINN.forward

    def recording_step(self, batch, batch_idx):
        seen["params"].update(p.dtype for p in self.parameters())
        loss = step(self, batch, batch_idx)
        seen["loss"].add(loss.dtype)
        return loss

    def recording_forward(self, x):
        out = forward(self, x)
        seen["output"].add((x.dtype, out.dtype))
        return out

    monkeypatch.setattr(pinn.SDGDTask, "training_step", recording_step)
    monkeypatch.setattr(BallPINN, "forward", recording_forward)  # evaluation calls the net itself
    metrics = train(compose("train", ["experiment=sdgd_pinn_tiny", "trainer.precision=64-true", "logger=none",
                                      "trainer.max_epochs=1", f"run_dir={tmp_path}"]))
    assert metrics["test/rel_l2"] == metrics["test/rel_l2"]
    assert seen["params"] == {torch.float64} and seen["loss"] == {torch.float64}
    assert seen["output"] == {(torch.float64, torch.float64)}  # evaluation points and u_θ
    state = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    assert {t.dtype for t in state.values() if t.is_floating_point()} == {torch.float64}
