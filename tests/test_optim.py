"""Orthogonalised optimizers: routing, the combined optimizer, Muon on kernels and spectral weights."""
import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from neuropde.models.fno import FNO
from neuropde.models.sfno import SFNO
from neuropde.optim.combined import CombinedOptimizer
from neuropde.optim.grouping import route_parameters, rule_for
from neuropde.optim.muon import MatrixMuon, muon

pytestmark = pytest.mark.usefixtures("one_thread")


def rules(module):
    return {name: rule for rule, items in route_parameters(module).items() for name, _ in items}


def test_routing_of_fno_and_sfno():
    fno = rules(FNO(4, 4, (6, 6), 8, 2))
    assert fno["fno.fno_blocks.convs.0.weight.tensor"] == "spectral"
    assert fno["fno.fno_blocks.fno_skips.0.conv.weight"] == "matrix"  # 1x1 conv kernel as a matrix
    assert fno["fno.fno_blocks.channel_mlp.0.fcs.0.weight"] == "matrix"
    assert fno["fno.lifting.fcs.0.weight"] == fno["fno.projection.fcs.1.weight"] == "adamw"
    assert fno["fno.fno_blocks.convs.0.bias"] == fno["fno.fno_blocks.channel_mlp.0.fcs.0.bias"] == "adamw"
    assert fno["fno.fno_blocks.channel_mlp_skips.0.weight"] == "adamw"  # 1x8: its polar factor is g/|g|
    sfno = rules(SFNO(modes=(4, 4, 3), width=8, n_layers=2, t_latent=4))
    assert sfno["spectral.0.weight"] == sfno["lifting.sconv.weight"] == "spectral"
    assert sfno["skip.0.weight"] == sfno["ffn.0.0.weight"] == "matrix"
    assert sfno["output_operator.sconv.weight"] == sfno["output_operator.sconv.bias"] == "adamw"
    assert sfno["reduction.weight"] == sfno["lifting.norm.weight"] == sfno["lifting.proj.weight"] == "adamw"
    assert rule_for("hidden.weight", nn.Parameter(torch.randn(16, 16))) == "matrix"


def test_combined_step_calls_the_closure_once_and_steps_every_member():
    torch.manual_seed(0)
    net = SFNO(modes=(4, 4, 3), width=8, n_layers=2, t_latent=4)
    opt = muon(net, lr=1e-2)
    assert isinstance(opt, CombinedOptimizer) and set(opt.optimizers) == {"muon_matrix", "adamw"}
    x = torch.randn(2, 4, 12, 12)
    calls = []

    def closure():
        calls.append(1)
        opt.zero_grad()
        loss = net(x, 3).pow(2).mean()
        loss.backward()
        return loss

    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt.step(closure)
    assert len(calls) == 1
    changed = {n for n, p in net.named_parameters() if not torch.equal(p, before[n])}
    assert {"spectral.0.weight", "skip.0.weight", "reduction.weight"} <= changed
    assert len(opt.param_groups) == 2 and all("lr" in g for g in opt.param_groups)


def test_state_dict_round_trip_continues_identically():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1))
    opt = muon(net, lr=1e-2)
    assert set(opt.optimizers) == {"muon", "adamw"}  # the hidden 16x16 goes to torch.optim.Muon
    x = torch.randn(32, 6)

    def step(model, optimizer):
        optimizer.zero_grad()
        model(x).pow(2).mean().backward()
        optimizer.step()

    for _ in range(3):
        step(net, opt)
    twin = copy.deepcopy(net)
    twin_opt = muon(twin, lr=1e-2)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert twin_opt.state_dict()["members"]["muon"]["state"]  # momentum buffers came along
    for _ in range(2):
        step(net, opt)
        step(twin, twin_opt)
    for a, b in zip(net.parameters(), twin.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="same optimizer"):
        twin_opt.load_state_dict({"members": {"adamw": {}}})


def test_matrix_muon_matches_torch_muon_on_a_kernel():
    torch.manual_seed(0)
    w = torch.randn(24, 16)
    g = torch.randn(24, 16)
    ref = nn.Parameter(w.clone())
    ours = nn.Parameter(w.clone()[..., None])  # a (out, in, 1) 1x1 convolution kernel
    ref.grad, ours.grad = g.clone(), g.clone()[..., None]
    opts = dict(lr=0.1, weight_decay=0.0, adjust_lr_fn="match_rms_adamw")
    torch.optim.Muon([ref], **opts).step()
    MatrixMuon([ours], **opts).step()
    d_ref, d_ours = (ref - w).flatten(), (ours[..., 0] - w).flatten()
    # torch runs Newton–Schulz in bfloat16, ours in float32: equal up to bf16 rounding
    assert torch.nn.functional.cosine_similarity(d_ref, d_ours, dim=0) > 0.999
    assert (d_ref.norm() - d_ours.norm()).abs() / d_ref.norm() < 2e-2


def test_matrix_muon_orthogonalises_each_spectral_mode():
    torch.manual_seed(0)
    w0 = torch.randn(6, 5, 3, 2, dtype=torch.cfloat)
    p = nn.Parameter(w0.clone())
    p.grad = torch.randn_like(w0)
    MatrixMuon([p], lr=0.1, weight_decay=0.0).step()
    delta = (w0 - p.detach()).permute(2, 3, 0, 1)  # (*modes, C_in, C_out)
    U, _, Vh = torch.linalg.svd(p.grad.permute(2, 3, 0, 1), full_matrices=False)
    polar = U @ Vh
    cos = (delta.conj() * polar).sum((-2, -1)).real / (delta.norm(dim=(-2, -1)) * polar.norm(dim=(-2, -1)))
    assert cos.min() > 0.95  # every mode moved along its own polar factor


@pytest.mark.parametrize("epochs", [pytest.param(40, marks=pytest.mark.slow), 2])
def test_training_with_muon_learns_and_counts_one_training_step_per_optimizer_step(epochs, data_root, tmp_path,
                                                                                   monkeypatch):
    """Steps and update rules in the default suite (2 epochs); learning (40 epochs, ~30 s) is slow."""
    from neuropde.run import train
    from neuropde.tasks.operator import OperatorTask
    from tests.conftest import compose

    calls = []
    original = OperatorTask.training_step

    def counted(self, batch, batch_idx):
        calls.append(batch_idx)
        return original(self, batch, batch_idx)

    monkeypatch.setattr(OperatorTask, "training_step", counted)
    metrics = train(compose("train", ["experiment=sfno_tiny", "optimizer=muon", f"trainer.max_epochs={epochs}",
                                      "optimizer.lr=1e-2", "optimizer.adamw.lr=1e-2", "logger=none",
                                      "plot_every_n_epochs=100", f"run_dir={tmp_path}"]))
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert len(calls) == last["global_step"] > 0
    assert set(last["optimizer_states"][0]["members"]) == {"muon_matrix", "adamw"}
    table = (tmp_path / "param_groups.txt").read_text().splitlines()
    # the complex spectral weights are orthogonalised per mode, the norms are on AdamW
    assert sum(line.startswith("muon_matrix") and "complex" in line for line in table) >= 2
    assert any(line.startswith("adamw") and line.endswith("norm.weight") for line in table)
    if epochs >= 40:
        assert metrics["test/rel_l2"] < 0.5 * metrics["test/rel_l2_persistence"]


def test_rule_maps():
    from neuropde.optim.muon import _cosh_damping, _per_matrix

    torch.manual_seed(0)
    g = torch.randn(3, 64, 64)
    # AuON's cosh factor is ≈ 1 on normalised Gaussian matrices (reference notes 2.7)
    x = g / torch.linalg.matrix_norm(g)[:, None, None]
    assert torch.allclose(_cosh_damping(x), torch.ones(3, 1, 1), atol=1e-3)
    auon = _per_matrix(g, "auon", 0)
    assert torch.allclose(torch.linalg.matrix_norm(auon), torch.ones(3), atol=1e-3)
    # a spike raises the factor: the one large entry is damped
    spiky = torch.zeros(4, 4)
    spiky[0, 0] = 1.0
    assert _cosh_damping(spiky[None] * 3).item() > 2
    # ROOT clips the top 10 % entries to the 90 % quantile before Newton–Schulz: an outlier
    # entry then barely changes the update
    clean = _per_matrix(g[:1], "root", 5)
    h = g[:1].clone()
    h[0, 0, 0] = 1e4
    assert (_per_matrix(h, "root", 5) - clean).norm() / clean.norm() < 0.1
    assert (_per_matrix(h, "muon", 5) - _per_matrix(g[:1], "muon", 5)).norm() / clean.norm() > 0.5
    # one Newton–Schulz step on a normalised matrix: hybrid differs from plain AuON
    assert not torch.allclose(_per_matrix(g, "hybrid_auon", 1), auon, atol=1e-3)


# every rule's update RMS is matched to AdamW's, so one learning rate serves all of them
@pytest.mark.parametrize("name", ["muon", "auon", "hybrid_auon", "root", "muon_randomized", "symmetric"])
def test_every_rule_fits_a_small_operator(name):
    from omegaconf import OmegaConf

    from neuropde.optim import build_optimizer
    from tests.conftest import compose

    torch.manual_seed(0)
    net = SFNO(modes=(4, 4, 3), width=8, n_layers=2, t_latent=4)
    cfg = OmegaConf.to_container(compose("train", [f"optimizer={name}", "optimizer.lr=1e-2"]).optimizer)
    opt = build_optimizer(cfg, net)
    x = torch.randn(4, 4, 12, 12)
    y = torch.roll(x[:, -3:], 1, dims=-1)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = (net(x, 3) - y).pow(2).mean() / y.pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], (name, losses[0], losses[-1])


def test_root_clips_exactly_the_top_decile():
    from neuropde.optim.muon import clip_top_decile

    torch.manual_seed(0)
    for M in (torch.randn(2, 20, 10), torch.randn(3, 8, 5, dtype=torch.cfloat)):
        clipped = clip_top_decile(M)
        changed = (clipped.abs() < M.abs() - 1e-6).flatten(-2).sum(-1)
        n = M.shape[-1] * M.shape[-2]
        assert (changed == n - round(0.9 * n)).all()
        assert torch.allclose(torch.angle(clipped), torch.angle(M), atol=1e-5)


def test_randomized_polar_is_exact_for_low_rank():
    from neuropde.optim.muon import randomized_polar

    torch.manual_seed(0)
    for dtype in (torch.float64, torch.cdouble):
        A = torch.randn(5, 40, 4, dtype=dtype) @ torch.randn(5, 4, 30, dtype=dtype)  # rank 4
        U, _, Vh = torch.linalg.svd(A, full_matrices=False)
        exact = U[..., :4] @ Vh[..., :4, :]
        assert torch.allclose(randomized_polar(A, rank=4), exact, atol=1e-8)
        assert torch.allclose(randomized_polar(A, rank=6), exact, atol=1e-8)  # extra rank adds nothing


def test_spectral_weights_can_go_to_adamw():
    net = SFNO(modes=(4, 4, 3), width=8, n_layers=2, t_latent=4)
    opt = muon(net, spectral="adamw")
    adam_params = {id(p) for g in opt.optimizers["adamw"].param_groups for p in g["params"]}
    assert id(net.spectral[0].weight) in adam_params
    with pytest.raises(ValueError, match="orthogonalize"):
        muon(net, spectral="sgd")


OPTIMIZERS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "optimizer").glob("*.yaml"))
FAMILIES = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "model").glob("*.yaml"))


# Every family with the rules that treat its parameters differently (plain AdamW; Muon's grouping,
# which all orthogonalised rules share, their maths being tested per weight kind in test_update_rms.py;
# L-BFGS unwrapped; AdaPre-LoRA's refusal), and every rule on the families whose weights differ most
# (complex spectral modes, factorised spectral tensors, attention and embeddings): 58 runs, not 100.
RULE_KINDS = ("adamw", "muon", "lbfgs", "adapre_lora")
WEIGHT_KINDS = ("fno", "mg_tfno", "lemon")
PAIRS = sorted({(f, o) for f in FAMILIES for o in RULE_KINDS} | {(f, o) for f in WEIGHT_KINDS for o in OPTIMIZERS})


@pytest.mark.parametrize("family, optimizer", PAIRS)
def test_every_family_takes_two_steps_with_every_optimizer(family, optimizer, data_root, tmp_path):
    from neuropde.run import train
    from tests.conftest import compose

    cfg = compose("train", [f"experiment={family}_tiny", f"optimizer={optimizer}", "trainer.max_epochs=1",
                            "trainer.limit_train_batches=2", "logger=none", f"run_dir={tmp_path}"])
    if optimizer == "adapre_lora":  # updates LoRA factors, which these families do not have
        from neuropde.errors import UserError

        with pytest.raises(UserError, match="LoRA"):
            train(cfg)
        return
    metrics = train(cfg)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2 and metrics["test/rel_l2"] == metrics["test/rel_l2"]
    if optimizer == "lbfgs":  # unwrapped, with its own state
        assert "members" not in last["optimizer_states"][0]


def test_learning_rate_follows_the_effective_batch(data_root, tmp_path):
    from neuropde.errors import UserError
    from neuropde.run import train
    from neuropde.optim.batch_scaling import lr_batch_factor
    from tests.conftest import compose

    assert lr_batch_factor("sqrt", 4, 16) == pytest.approx(2.0)
    assert lr_batch_factor("linear", 4, 16) == pytest.approx(4.0)
    assert lr_batch_factor("none", None, 16) == 1.0
    with pytest.raises(UserError, match="reference_batch_size"):
        lr_batch_factor("sqrt", None, 16)
    # ns2d_tiny trains with batch 4: linear scaling from a reference of 2 doubles every group's lr
    train(compose("train", ["experiment=fno_tiny", "optimizer=muon", "scheduler=none", "trainer.max_epochs=1",
                            "trainer.limit_train_batches=1", "optimizer.batch_scaling=linear",
                            "optimizer.reference_batch_size=2", "logger=none", f"run_dir={tmp_path}"]))
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["optimizer_states"][0]
    lrs = [g["lr"] for member in state["members"].values() for g in member["param_groups"]]
    assert lrs and all(lr == pytest.approx(2e-3) for lr in lrs)


@pytest.mark.parametrize("name", ["adamw", "muon", "auon", "hybrid_auon", "root", "muon_randomized", "symmetric"])
def test_every_rule_fits_a_small_mlp(name):
    """A PINN-sized MLP (hidden 32×32 matrices, a 2-column input and 1-row output layer)."""
    from omegaconf import OmegaConf

    from neuropde.optim import build_optimizer
    from tests.conftest import compose

    torch.manual_seed(0)
    net = torch.nn.Sequential()
    net.add_module("lifting", torch.nn.Linear(2, 32))
    net.add_module("act0", torch.nn.Tanh())
    net.add_module("hidden", torch.nn.Linear(32, 32))
    net.add_module("act1", torch.nn.Tanh())
    net.add_module("head", torch.nn.Linear(32, 3))
    x = torch.rand(256, 2) * 2 - 1
    y = torch.stack([torch.sin(3 * x[:, 0]) * x[:, 1], x[:, 0] * x[:, 1], torch.cos(2 * x[:, 1])], dim=1)
    cfg = OmegaConf.to_container(compose("train", [f"optimizer={name}", "optimizer.lr=1e-2"]).optimizer)
    opt = build_optimizer(cfg, net)
    losses = []
    for _ in range(150):
        opt.zero_grad()
        loss = (net(x) - y).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], (name, losses[0], losses[-1])


def test_symmetric_maps_are_equivariant_and_routed_by_role():
    from neuropde.optim.symmetric import one_sided_spectral, row_normalize, symmetric

    torch.manual_seed(0)
    M = torch.randn(2, 16, 5, dtype=torch.float64)
    Q = torch.linalg.qr(torch.randn(16, 16, dtype=torch.float64))[0]
    R = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64))[0]
    perm = torch.randperm(16)
    right = one_sided_spectral(M, "right")
    # O(m) on the hidden side and O(n) on the input side commute with the right spectral map
    assert torch.allclose(one_sided_spectral(Q @ M @ R, "right"), Q @ right @ R, atol=1e-5)  # computed in float32
    # which, for a full-rank matrix and alpha = 0, is the polar factor
    U, _, Vh = torch.linalg.svd(M, full_matrices=False)
    assert torch.allclose(right, U @ Vh, atol=1e-5)
    # row-norm commutes with permuting rows (output channels) and gives unit rows
    rows = row_normalize(M)
    assert torch.allclose(row_normalize(M[:, perm]), rows[:, perm])
    assert torch.allclose(rows.norm(dim=-1), torch.ones(2, 16, dtype=torch.float64))
    # the centred variant ignores a shift shared by every row (softmax logits)
    shift = torch.randn(2, 1, 5, dtype=torch.float64)
    assert torch.allclose(row_normalize(M + shift, center=True), row_normalize(M, center=True), atol=1e-12)

    net = SFNO(modes=(4, 4, 3), width=8, n_layers=2, t_latent=4)
    opt = symmetric(net)
    rule_of = {id(p): g["rule"] for g in opt.optimizers["symmetric"].param_groups for p in g["params"]}
    names = {id(p): n for n, p in net.named_parameters()}
    got = {names[i]: r for i, r in rule_of.items()}
    assert got["lifting.ffn.0.weight"] == "right_spectral"
    assert "lifting.norm.weight" not in got and "reduction.weight" not in got  # 1-D, 1×8: AdamW
    mlp = torch.nn.Sequential()
    mlp.add_module("hidden", torch.nn.Linear(4, 8))
    mlp.add_module("head", torch.nn.Linear(8, 3))
    groups = symmetric(mlp).optimizers["symmetric"].param_groups
    assert [(g["rule"], [tuple(p.shape) for p in g["params"]]) for g in groups] == [("rownorm", [(3, 8)])]


def test_lsm_tokens_and_basis_coefficients_stay_on_adamw():
    from neuropde.models.lsm import LSM

    net = LSM(1, 1, width=8, n_heads=4, n_scales=3, patch_size=(2, 2))
    got = rules(net)
    assert got["blocks.0.tokens"] == "adamw" and got["blocks.0.coefficients"] == "adamw"
    assert got["lift.weight"] == "adamw"  # touches the data
    assert any(name.startswith("encoders") and rule == "matrix" for name, rule in got.items())  # 3x3 convs
