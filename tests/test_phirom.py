"""Tests of the Φ-ROM network pieces (arXiv 2505.14595): resolution-free decoders, Bosh3 order,
the least-squares latent velocity and its gradients, latent inversion and the losses (CPU)."""
import math

import pytest
import torch

from neuropde.models.phirom import (HyperDecoder, LatentDynamics, SineMLPDecoder, bosh3_step,
                                    dynamics_loss, fit_latent, gather_points, latent_velocity,
                                    random_subset, relative_l2, rollout, scale_coordinates)
from neuropde.pde.burgers import Burgers1D, burgers_initial_condition
from neuropde.pde.stepping import solver_time_derivative
from tests.helpers import fitted_order, rel

pytestmark = pytest.mark.usefixtures("one_thread")

DECODERS = {
    "mlp": lambda d, k, c=1: SineMLPDecoder(d, k, c, width=32, depth=4),
    "hyper": lambda d, k, c=1: HyperDecoder(d, k, c, width=32, n_layers=3),
}


def make(name, d, k, c=1, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return DECODERS[name](d, k, c).to(dtype)


def grid1d(n, dtype=torch.float64):
    return scale_coordinates(torch.arange(n, dtype=dtype)[:, None] * (2 * math.pi / n), 0.0, 2 * math.pi)


@pytest.mark.parametrize("name", DECODERS)
def test_decoder_shapes_shared_and_per_sample_points(name):
    dec = make(name, d=2, k=5, c=3, dtype=torch.float32)
    alpha, x = torch.randn(4, 5), torch.rand(7, 2) * 2 - 1
    out = dec(alpha, x)
    assert out.shape == (4, 7, 3)
    assert torch.allclose(dec(alpha, x.expand(4, 7, 2)), out, atol=1e-6)     # per sample = shared
    assert dec(alpha, torch.rand(4, 9, 2)).shape == (4, 9, 3)
    assert torch.allclose(dec(alpha[1], x), out[1], atol=1e-6)              # unbatched form
    with pytest.raises(ValueError, match="wants alpha"):
        dec(torch.randn(4, 6), x)


@pytest.mark.parametrize("name", DECODERS)
def test_decoder_is_resolution_free(name):
    dec = make(name, d=1, k=4)
    alpha = 0.3 * torch.randn(3, 4, dtype=torch.float64)
    fine, coarse = dec(alpha, grid1d(256)), dec(alpha, grid1d(64))
    assert (fine[:, ::4] - coarse).abs().max() < 1e-12            # the coarse grid is every 4th point
    perm = torch.randperm(256)[:40]                                # any subset, in any order
    assert (dec(alpha, grid1d(256)[perm]) - fine[:, perm]).abs().max() < 1e-12
    # the field between grid points is that of a smooth function: midpoints close to neighbour mean
    mid = dec(alpha, (grid1d(256)[:-1] + grid1d(256)[1:]) / 2)
    assert rel(mid, (fine[:, :-1] + fine[:, 1:]) / 2) < 0.05


def test_scale_coordinates_and_output_normalization():
    x = torch.tensor([[0.0, -3.0], [2.0, 5.0], [1.0, 1.0]])
    assert torch.allclose(scale_coordinates(x, torch.tensor([0.0, -3.0]), torch.tensor([2.0, 5.0])),
                          torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]))
    dec = make("hyper", d=2, k=3, c=2, dtype=torch.float32)
    alpha, pts = torch.randn(2, 3), torch.rand(5, 2)
    raw = dec(alpha, pts)
    dec.set_output_normalization(torch.tensor([1.0, -2.0]), torch.tensor([3.0, 0.5]))
    assert torch.allclose(dec(alpha, pts), raw * torch.tensor([3.0, 0.5]) + torch.tensor([1.0, -2.0]))
    state = dec.state_dict()
    assert torch.equal(state["out_std"], torch.tensor([3.0, 0.5]))


def test_bosh3_is_third_order_on_linear_ode():
    A = torch.tensor([[-0.3, 2.0], [-2.0, -0.3]], dtype=torch.float64)    # damped rotation
    a0 = torch.tensor([[1.0, 0.5], [-0.2, 2.0]], dtype=torch.float64)
    exact = a0 @ torch.linalg.matrix_exp(A * 2.0).T
    f = lambda a: a @ A.T                                                  # noqa: E731
    hs, errs = [], []
    for n in (10, 20, 40, 80):
        traj = rollout(f, a0, n, 2.0 / n)
        hs.append(2.0 / n)
        errs.append((traj[:, -1] - exact).norm().item())
    order = fitted_order(hs, errs)
    assert 2.9 < order < 3.1, (order, errs)
    # rollout keeps a0, and substeps are finer steps saved less often
    fine = rollout(f, a0, 20, 0.1)
    sub = rollout(f, a0, 10, 0.2, substeps=2)
    assert sub.shape == (2, 11, 2) and torch.equal(sub[:, 0], a0)
    assert torch.allclose(sub, fine[:, ::2], atol=1e-14)
    assert torch.allclose(bosh3_step(f, a0, 0.1), fine[:, 1])


def jvp_rhs(dec, alpha, x, a):
    """r = J a by a forward-mode JVP (independent of latent_velocity's jacfwd route)."""
    return torch.func.jvp(lambda al: dec(al, x), (alpha,), (a,))[1]


@pytest.mark.parametrize("name", DECODERS)
def test_latent_velocity_recovers_exact_velocity(name):
    dec = make(name, d=2, k=6, c=2)
    B = 3
    alpha, a_true = 0.3 * torch.randn(B, 6, dtype=torch.float64), torch.randn(B, 6, dtype=torch.float64)
    x = torch.rand(B, 20, 2, dtype=torch.float64) * 2 - 1                 # per-sample points
    v, finite, n_bad = latent_velocity(dec, alpha, x, jvp_rhs(dec, alpha, x, a_true))
    assert (v - a_true).abs().max() < 1e-9 and finite.all() and n_bad == 0
    xs = torch.rand(20, 2, dtype=torch.float64) * 2 - 1                  # shared points
    v = latent_velocity(dec, alpha, xs, jvp_rhs(dec, alpha, xs, a_true)).velocity
    assert (v - a_true).abs().max() < 1e-9


def test_latent_velocity_gradients_match_finite_differences():
    dec = make("mlp", d=1, k=4)
    B, P = 2, 12
    alpha = (0.2 * torch.randn(B, 4, dtype=torch.float64)).requires_grad_(True)
    r = torch.randn(B, P, 1, dtype=torch.float64, requires_grad=True)
    x = torch.rand(P, 1, dtype=torch.float64) * 2 - 1
    w = torch.randn(B, 4, dtype=torch.float64)
    loss = lambda: (latent_velocity(dec, alpha, x, r).velocity * w).sum()  # noqa: E731
    params = list(dec.parameters())
    grads = torch.autograd.grad(loss(), params + [alpha, r])
    assert all(torch.isfinite(g).all() for g in grads)
    # J = ∂D/∂α does not depend on the output bias; every other tensor moves α̇*
    assert grads[-3].abs().sum() == 0 and all(g.abs().sum() > 0 for g in grads[:-3] + grads[-2:])
    direction = [torch.randn_like(p) for p in params]
    analytic = sum((g * d).sum() for g, d in zip(grads, direction)).item()
    errors = []
    for eps in (1e-5, 1e-6, 1e-7):
        values = []
        with torch.no_grad():
            for sign in (1, -1):
                for p, d in zip(params, direction):
                    p.add_(sign * eps * d)
                values.append(loss().item())
                for p, d in zip(params, direction):
                    p.sub_(sign * eps * d)
        errors.append(abs(analytic - (values[0] - values[1]) / (2 * eps)) / abs(analytic))
    # central differences converge to the analytic directional derivative as eps²
    assert errors[0] / errors[1] > 50 and errors[2] < 1e-7, errors


def test_latent_velocity_underdetermined_ridge_and_nonfinite_count():
    dec = make("hyper", d=1, k=8)
    alpha, x = 0.1 * torch.randn(2, 8, dtype=torch.float64), grid1d(5)
    r = torch.randn(2, 5, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="5 equations cannot fix 8"):
        latent_velocity(dec, alpha, x, r)
    J = torch.func.vmap(torch.func.jacfwd(lambda a: dec(a, x).reshape(-1)))(alpha)
    norms = []
    for lam in (1e-3, 1e-1, 1e1):                                          # P·C < k is fine with ridge
        v = latent_velocity(dec, alpha, x, r, ridge=lam).velocity
        normal = torch.linalg.solve(J.mT @ J + lam * torch.eye(8, dtype=torch.float64), J.mT @ r)[..., 0]
        assert (v - normal).abs().max() < 1e-9
        norms.append(v.norm().item())
    assert norms[0] > norms[1] > norms[2]                                  # ridge shrinks α̇*
    # a latent direction the decoder ignores: J loses rank, the QR solve is non-finite, counted
    mlp = make("mlp", d=1, k=3)
    with torch.no_grad():
        mlp.layers[0].weight[:, 1] = 0.0
    xs, rs = grid1d(16), torch.randn(2, 16, 1, dtype=torch.float64)
    out = latent_velocity(mlp, 0.1 * torch.randn(2, 3, dtype=torch.float64), xs, rs)
    assert out.n_nonfinite == 2 and not out.finite.any()
    # masking the bad entries out of a loss does not clean the gradient: callers must zero it
    masked = torch.where(torch.isfinite(out.velocity), out.velocity, 0.0).sum()
    assert not torch.isfinite(torch.autograd.grad(masked, mlp.layers[0].weight)[0]).all()
    assert latent_velocity(mlp, torch.zeros(2, 3, dtype=torch.float64), xs, rs, ridge=1e-8).finite.all()


def test_random_subset_and_gather():
    g = torch.Generator().manual_seed(0)
    idx = random_subset(128, 0.1, 4, g, min_points=4)
    assert idx.shape == (4, 13) and idx.dtype == torch.long
    assert all(row.unique().numel() == 13 for row in idx) and not torch.equal(idx[0], idx[1])
    assert random_subset(20, 0.05, 2, min_points=6).shape == (2, 6)         # at least k points
    assert torch.equal(random_subset(128, 0.1, 4, torch.Generator().manual_seed(0), min_points=4), idx)
    vals = torch.randn(4, 128, 2)
    assert torch.equal(gather_points(vals, idx)[2], vals[2, idx[2]])
    with pytest.raises(ValueError):
        random_subset(5, 0.5, 1, min_points=6)


@pytest.mark.parametrize("name", DECODERS)
def test_fit_latent_recovers_field_from_all_and_sparse_points(name):
    dec = make(name, d=1, k=4, seed=1)
    dec.set_output_normalization(0.5, 2.0)
    before = {n: p.detach().clone() for n, p in dec.named_parameters()}
    x = grid1d(128)
    g = torch.Generator().manual_seed(3)
    a_true = 0.5 * torch.randn(3, 4, dtype=torch.float64, generator=g)
    if name == "hyper":     # the reference's inversion: from zeros, Adam lr 0.1
        init, lr = None, 0.1
    else:                   # sin(30·(W_α α + …)) makes α ↦ D multimodal: warm start, smaller steps
        init, lr = a_true + 0.05 * torch.randn(3, 4, dtype=torch.float64, generator=g), 0.01
    with torch.no_grad():
        u = dec(a_true, x)
    full = fit_latent(dec, u, x, steps=1000, lr=lr, init=init)
    idx = random_subset(128, 0.1, 1, torch.Generator().manual_seed(4))[0]   # 13 of 128 points
    with torch.inference_mode():                                            # as in a predict loop
        sparse = fit_latent(dec, u[:, idx], x[idx], steps=1000, lr=lr, init=init)
    with torch.no_grad():
        err_full = relative_l2(dec(full, x), u)
        err_sparse = relative_l2(dec(sparse, x), u)                        # judged on ALL points
    assert err_full.max() < 1e-6 and err_sparse.max() < 1e-6, (err_full, err_sparse)
    assert all(torch.equal(p, before[n]) and p.grad is None for n, p in dec.named_parameters())


def test_fit_latent_keeps_best_iterate_and_fits_samples_independently():
    dec = make("hyper", d=1, k=4, seed=2)
    x = grid1d(64)
    a_true = 0.5 * torch.randn(2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        u = dec(a_true, x)
    mse = lambda a: ((dec(a, x) - u) ** 2).mean((1, 2))                     # noqa: E731
    init = torch.randn(2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert torch.equal(fit_latent(dec, u, x, steps=0, init=init), init)
        wild = fit_latent(dec, u, x, steps=50, lr=50.0, init=init)         # Adam thrown far away
        assert (mse(wild) <= mse(init)).all()                              # never worse than a seen iterate
    batched = fit_latent(dec, u, x, steps=200, init=init)
    alone = torch.cat([fit_latent(dec, u[i:i + 1], x, steps=200, init=init[i:i + 1]) for i in range(2)])
    assert torch.allclose(batched, alone, atol=1e-8)


def test_latent_dynamics_with_parameters():
    torch.manual_seed(0)
    psi = LatentDynamics(4, width=16, depth=3, param_dim=2)
    psi.set_param_normalization(torch.tensor([0.02, 1.0]), torch.tensor([0.005, 0.1]))
    alpha, mu = torch.randn(5, 4), torch.tensor([[0.015, 1.0], [0.03, 1.2]]).repeat(3, 1)[:5]
    out = psi(alpha, mu)
    assert out.shape == (5, 4)
    assert not torch.allclose(psi(alpha, mu + torch.tensor([0.01, 0.0])), out)     # μ matters
    assert torch.allclose(psi(alpha, torch.tensor([0.02, 1.0])), psi(alpha, torch.tensor([[0.02, 1.0]]).expand(5, 2)))
    with pytest.raises(ValueError, match="needs mu"):
        psi(alpha)
    act, z = psi.net[1], torch.linspace(-3, 3, 7)
    assert torch.allclose(act(z), z * torch.sigmoid(z * math.log1p(math.exp(0.5))) / 1.1)
    out.square().sum().backward()
    assert act.beta.grad is not None and act.beta.grad != 0 and psi.param_map.weight.grad.abs().sum() > 0
    plain = LatentDynamics(4, width=16, depth=2)
    assert plain(alpha).shape == (5, 4) and plain.net[0].in_features == 4
    traj = rollout(lambda a: psi(a, mu), alpha, 3, 0.1)
    assert traj.shape == (5, 4, 4)


def test_dynamics_loss_stops_gradient_only_in_denominator():
    p = torch.tensor([[1.0, 2.0]], dtype=torch.float64, requires_grad=True)
    s = torch.tensor([[3.0, 4.0]], dtype=torch.float64, requires_grad=True)
    loss = dynamics_loss(p, s)
    assert abs(loss.item() - 2 * math.sqrt(2) / 5) < 1e-15
    gp, gs = torch.autograd.grad(loss, (p, s))
    diff, dn, sn = p.detach() - s.detach(), 2 * math.sqrt(2), 5.0
    assert torch.allclose(gp, diff / (dn * sn), atol=1e-15)
    assert torch.allclose(gs, -diff / (dn * sn), atol=1e-15)               # no −‖p−s‖ s/‖s‖³ term
    full = -diff / (dn * sn) - dn * s.detach() / sn ** 3
    assert (gs - full).abs().max() > 0.05


def test_relative_l2_per_sample():
    t = torch.tensor([[[3.0], [4.0]], [[1.0], [0.0]]])
    p = t + torch.tensor([[[0.0], [5.0]], [[0.5], [0.0]]])
    assert torch.allclose(relative_l2(p, t), torch.tensor([1.0, 0.5]))


def test_training_step_with_burgers_solver_has_finite_gradients():
    """The pieces wired as a training step: decoder on the solver grid, solver derivative, random
    subset, least-squares velocity, both losses; gradients reach decoder, Ψ and latents."""
    torch.manual_seed(0)
    solver, k, B = Burgers1D(n=32, nu=0.05), 4, 3
    dec = SineMLPDecoder(1, k, width=16, depth=3, w0=10.0)
    psi = LatentDynamics(k, width=16, depth=2, param_dim=1)
    x = scale_coordinates(solver.grid().float()[:, None], 0.0, solver.L)
    u = burgers_initial_condition(B, n=32, generator=torch.Generator().manual_seed(0)).float()[..., None]
    alpha = (0.1 * torch.randn(B, k)).requires_grad_(True)
    r = solver_time_derivative(solver, dec(alpha, x)[..., 0], 0.01)[..., None]     # float64
    idx = random_subset(32, 0.25, B, torch.Generator().manual_seed(1), min_points=k)
    a_star, finite, n_bad = latent_velocity(dec, alpha, x[idx], gather_points(r, idx))
    assert a_star.dtype == torch.float32 and n_bad == 0
    loss = 0.5 * relative_l2(dec(alpha, x), u).mean() + 0.5 * dynamics_loss(psi(alpha, torch.rand(B, 1)), a_star)
    loss.backward()
    for t in [alpha, *dec.parameters(), *psi.parameters()]:
        assert t.grad is not None and torch.isfinite(t.grad).all()
    assert dec.layers[0].weight.grad.abs().sum() > 0 and alpha.grad.abs().sum() > 0
