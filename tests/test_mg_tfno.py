"""MG-TFNO: tensorised spectral weights, multi-grid patching around them, and the ns2d_hr pairs."""

import numpy as np
import pytest
import torch

from neuropde.models.fno import FNO
from neuropde.models.mg_tfno import MGTFNO

pytestmark = pytest.mark.usefixtures("one_thread")


def spectral_params(model) -> int:
    return sum(p.numel() * (2 if p.is_complex() else 1) for n, p in model.named_parameters() if ".convs." in n)


@pytest.mark.parametrize("factorization", ["tucker", "cp", "tt"])
def test_factorized_contraction_equals_the_reconstructed_weight(factorization):
    torch.manual_seed(0)
    kw = dict(modes=(8, 8), width=16, n_layers=2, factorization=factorization, rank=0.1)
    fact = FNO(1, 1, implementation="factorized", **kw)
    recon = FNO(1, 1, implementation="reconstructed", **kw)
    # neuraloperator's state_dict carries a "_metadata" entry the task strips for checkpoints
    recon.load_state_dict({k: v for k, v in fact.state_dict().items() if k != "_metadata"})
    x = torch.randn(2, 1, 32, 32)
    assert torch.allclose(fact(x), recon(x), atol=1e-5)
    # rank is the fraction of the dense spectral parameters kept
    dense = spectral_params(FNO(1, 1, modes=(8, 8), width=16, n_layers=2))
    assert 0.05 < spectral_params(fact) / dense < 0.15


def test_unknown_factorization_is_refused():
    with pytest.raises(ValueError, match="tucker, cp or tt"):
        FNO(1, 1, factorization="svd")


def test_levels_zero_is_a_plain_tfno_and_patched_models_take_any_grid():
    torch.manual_seed(0)
    mg = MGTFNO(1, 1, modes=(4, 4), width=8, n_layers=2, levels=0)
    x = torch.randn(2, 1, 24, 24)
    assert torch.equal(mg(x), mg.net(x))
    for levels, size in [(1, 64), (2, 64), (1, 96), (2, 100)]:
        mg = MGTFNO(1, 2, modes=(4, 4), width=8, n_layers=2, levels=levels, padding=0.125)
        assert mg.net.t_in == levels + 1  # the field and one coarse context per level
        y = mg(torch.randn(1, 1, size, size))
        assert y.shape == (1, 2, size, size) and torch.isfinite(y).all()
    c, h, w = MGTFNO(1, 1, modes=(4, 4), width=8, levels=2, padding=0.125).patch_shape(64, 64)
    assert (c, h, w) == (3, 20, 20)  # 16 + 2·2 pixels: a quarter of the side plus context
    with pytest.raises(ValueError, match="t_in=1"):
        mg(torch.randn(1, 3, 64, 64))


def test_mg_tfno_is_translation_equivariant_by_whole_patches():
    """Shifting the field by one patch shifts the output by one patch (periodic data, shared weights)."""
    torch.manual_seed(0)
    mg = MGTFNO(1, 1, modes=(4, 4), width=8, n_layers=2, levels=1, padding=0.125, positional_embedding=None)
    x = torch.randn(1, 1, 32, 32)
    shifted = mg(torch.roll(x, 16, dims=-1))
    assert torch.allclose(shifted, torch.roll(mg(x), 16, dims=-1), atol=1e-5)


def test_forcing_pairs_are_seeded_per_sample_and_reach_the_analytic_early_response(tmp_path):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from neuropde.data.generators import ensure_generated
    from neuropde.run import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", ["data=ns2d_hr_tiny", "data.samples.train=3", "data.samples.val=1",
                                "data.samples.test=1", "data.generator.t_final=0.02", "data.generator.dt=0.01"])
    data = OmegaConf.to_container(cfg.data, resolve=True)
    a = ensure_generated(data, tmp_path / "a", progress=False)
    data["generator"]["shard_size"] = 1
    b = ensure_generated(data, tmp_path / "b", progress=False)
    fa, ta, _ = a.read("train")
    fb, _, _ = b.read("train")
    assert fa.shape == (3, 2, 32, 32) and np.array_equal(fa, fb)  # same samples whatever the shard size
    assert ta.tolist() == [0.0, 0.02]
    f, w = torch.from_numpy(fa[:, 0]).double(), torch.from_numpy(fa[:, 1]).double()
    assert torch.allclose(f.pow(2).mean(dim=(-2, -1)).sqrt(), torch.ones(3, dtype=torch.float64), atol=1e-5)
    # from rest, ω(t) = t·f + O(t²): at t = 0.02 the relative deviation is about a percent
    assert ((w - 0.02 * f).norm() / (0.02 * f).norm()).item() < 0.05
    assert not np.allclose(fa[0, 0], fa[1, 0])  # distinct forcings per sample (each of RMS 1)


def test_patch_chunks_give_the_same_output_and_gradients_with_less_saved_memory():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments" / "mg_tfno"))
    from run import call_memory_mb

    torch.manual_seed(0)
    whole = MGTFNO(1, 1, modes=(4, 4), width=8, n_layers=2, levels=2)
    chunked = MGTFNO(1, 1, modes=(4, 4), width=8, n_layers=2, levels=2, patch_chunk=4)
    chunked.load_state_dict({k: v for k, v in whole.state_dict().items() if not k.endswith("_metadata")})
    x = torch.randn(2, 1, 48, 48)
    y1, y2 = whole(x), chunked(x)
    assert torch.allclose(y1, y2, atol=1e-6)
    y1.square().mean().backward()
    y2.square().mean().backward()
    for (name, a), b in zip(whole.named_parameters(), chunked.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name
    # autograd keeps only the chunk inputs, not the 32 patches' activations
    assert call_memory_mb(chunked, x) < 0.3 * call_memory_mb(whole, x)
    with pytest.raises(ValueError, match="patch_chunk"):
        MGTFNO(1, 1, patch_chunk=-1)


def test_pairs_get_separate_input_and_output_statistics(data_root, tmp_path):
    """A forcing (RMS 1) and the vorticity it drives have different scales: each is normalised by
    its own training statistics, and old checkpoints without output statistics still load."""
    from neuropde.data.datamodule import TrajectoryDataModule
    from neuropde.tasks.operator import OperatorTask
    from tests.conftest import compose
    from omegaconf import OmegaConf

    cfg = compose("train", ["experiment=mg_tfno_tiny"])
    dm = TrajectoryDataModule(OmegaConf.to_container(cfg.data, resolve=True), data_root, progress=False)
    dm.setup()
    train = dm.load("train")
    assert dm.stats["out_std"] == pytest.approx(float(train[:, 1:].std()), rel=1e-5)
    assert dm.stats["std"] == pytest.approx(float(train[:, :1].std()), rel=1e-5)
    task = OperatorTask(torch.nn.Identity(), t_out=1, optimizer={}, stats=dm.stats)
    y = train[:2, 1:]
    assert torch.allclose(task.denormalize((y - dm.stats["out_mean"]) / dm.stats["out_std"]), y, atol=1e-5)
    old = {k: v for k, v in task.state_dict().items() if not k.startswith("out_")}
    fresh = OperatorTask(torch.nn.Identity(), t_out=1, optimizer={})
    fresh.load_state_dict(old)
    assert fresh.out_std == task.norm_std


def test_joint_factorization_is_one_tensor_shared_by_all_layers():
    """joint=true: no per-layer spectral weights; one (L, C, C, *modes) Tucker tensor whose channel and
    mode factors all layers share, so at the same rank fraction (of all layers' dense weights) it
    keeps about the per-layer count with larger ranks; factorised ≡ reconstructed contraction."""
    from neuropde.nn.joint_factorization import JointSpectralWeight

    kw = dict(modes=(8, 8), width=16, n_layers=4, factorization="tucker", rank=0.1)
    torch.manual_seed(0)
    joint = MGTFNO(1, 1, levels=1, joint=True, **kw)
    per_layer = MGTFNO(1, 1, levels=1, **kw)
    names = [n for n, _ in joint.named_parameters()]
    assert not any(".convs." in n and "weight" in n for n in names)
    jw = joint.net.joint
    assert isinstance(jw, JointSpectralWeight) and tuple(jw.weight.shape) == (4, 16, 16, 8, 5)
    assert jw.rank[0] == 4  # the layer mode is not compressed
    layer_ranks = per_layer.net.fno.fno_blocks.convs[0].weight.rank
    assert all(j >= p for j, p in zip(jw.rank[1:], layer_ranks))
    joint_count = sum(p.numel() * 2 for p in jw.parameters())
    dense = 4 * 16 * 16 * 8 * 5 * 2
    assert 0.08 < joint_count / dense < 0.12 and 0.9 < joint_count / spectral_params(per_layer) < 1.1
    # the per-layer Tucker's ranks, shared: fewer parameters than L separate tensors
    core = int(np.prod(layer_ranks))
    factors = sum(n * r for n, r in zip((16, 16, 8, 5), layer_ranks))
    assert 4 * core + 16 + factors < 4 * (core + factors)

    x = torch.randn(2, 1, 32, 32, requires_grad=True)
    y = joint(x)
    y.square().mean().backward()
    assert y.shape == (2, 1, 32, 32) and x.grad.shape == x.shape
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in jw.parameters())
    recon = MGTFNO(1, 1, levels=1, joint=True, implementation="reconstructed", **kw)
    recon.load_state_dict({k: v for k, v in joint.state_dict().items() if k != "_metadata"})
    assert torch.allclose(recon(x), y, atol=1e-5)
    for fac in ("cp", "tt"):
        assert MGTFNO(1, 1, levels=0, joint=True, **{**kw, "factorization": fac})(x).shape == y.shape
    with pytest.raises(ValueError, match="joint"):
        MGTFNO(1, 1, joint=True, **{**kw, "factorization": "dense"})


def test_joint_tfno_fits_a_batch():
    """A few Adam steps on one batch lower the loss of the jointly factorised MG-TFNO."""
    torch.manual_seed(0)
    net = MGTFNO(1, 1, modes=(6, 6), width=12, n_layers=2, levels=1, joint=True)
    g = torch.linspace(0, 2 * np.pi, 33)[:-1]
    a = torch.randn(4, 1, 3, 1, 1)
    x = a[:, :, 0] * torch.sin(g)[:, None] + a[:, :, 1] * torch.cos(2 * g)[None] + a[:, :, 2]  # (4, 1, 32, 32)
    target = torch.roll(x, 3, dims=-1) + 0.5 * x  # smooth: within the kept modes
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = (net(x) - target).square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_joint_tfno_checkpoint_round_trips(data_root, tmp_path):
    """Trained with joint=true, the checkpoint loads (weights_only) and predicts the same test error."""
    from neuropde.run import predict, train
    from tests.conftest import compose

    cfg = compose("train", ["experiment=mg_tfno_tiny", "model.net.joint=true", "trainer.max_epochs=1",
                            f"run_dir={tmp_path}"])
    metrics = train(cfg)
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert any(".joint.weight.core" in k for k in state) and not any(".convs.0.weight" in k for k in state)
    out = predict(compose("predict", [f"ckpt={tmp_path}", f"run_dir={tmp_path / 'pred'}"]))
    assert out["test/rel_l2"] == pytest.approx(metrics["test/rel_l2"], rel=1e-4)
