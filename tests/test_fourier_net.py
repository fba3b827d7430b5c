"""neuropde's FourierNet: the same network as neuraloperator's FNO, on neuropde's SpectralConv."""
import pytest
import torch
from neuralop.models import FNO as NeuralopFNO

from neuropde.models.fno import FNO
from neuropde.nn import FourierNet
from neuropde.run import train
from tests.conftest import compose

pytestmark = pytest.mark.usefixtures("one_thread")


def n_params(module):
    return sum(p.numel() * (2 if p.is_complex() else 1) for p in module.parameters())


@pytest.mark.parametrize("transform, pointwise", [("fft", "gemm"), ("dft", "gemm"), ("dft", "conv")])
@pytest.mark.parametrize("modes, shape", [((12, 12), (64, 64)), ((16,), (50,)), ((8, 8, 6), (16, 20, 14)),
                                          ((12, 12), (32, 40))])
def test_same_function_as_neuraloperator(modes, shape, transform, pointwise):
    """neuraloperator's weights carried across give its outputs: the configurations are identical."""
    torch.manual_seed(0)
    ref = NeuralopFNO(n_modes=modes, in_channels=3, out_channels=2, hidden_channels=16, n_layers=3)
    ours = FourierNet.from_neuralop(ref, transform=transform, pointwise=pointwise)
    assert n_params(ours) == n_params(ref)
    x = torch.randn(2, 3, *shape)
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert (got - expected).abs().max() / expected.abs().max() < 1e-5
    # and the mapping is sharp: a model of its own (fresh weights) is far away
    with torch.no_grad():
        other = FourierNet(3, 2, modes, 16, 3, transform=transform)(x)
    assert (other - expected).abs().max() / expected.abs().max() > 0.1


def test_gradients_match_neuraloperator():
    torch.manual_seed(1)
    ref = NeuralopFNO(n_modes=(8, 8), in_channels=2, out_channels=1, hidden_channels=8, n_layers=2)
    ours = FourierNet.from_neuralop(ref, transform="dft")
    x = torch.randn(3, 2, 32, 32)
    ref(x).square().mean().backward()
    ours(x).square().mean().backward()
    g_ref = ref.fno_blocks.fno_skips[0].conv.weight.grad[..., 0]
    assert torch.allclose(ours.skips[0].weight.grad, g_ref, rtol=1e-4, atol=1e-6)
    assert torch.allclose(ours.lifting.fc1.weight.grad, ref.lifting.fcs[0].weight.grad[..., 0], rtol=1e-4, atol=1e-6)


def test_training_follows_neuraloperator_step_for_step():
    """Same weights, same data, same optimizer: the two loss curves coincide."""
    torch.manual_seed(2)
    ref = NeuralopFNO(n_modes=(8, 8), in_channels=2, out_channels=1, hidden_channels=8, n_layers=2)
    ours = FourierNet.from_neuralop(ref, transform="dft")
    x_hat = torch.fft.rfft2(torch.randn(8, 2, 32, 32))
    x_hat[..., 4:-3, :] = 0
    x_hat[..., 4:] = 0
    x = torch.fft.irfft2(x_hat, s=(32, 32))  # band-limited: modes |k| <= 3
    x = x / x.std()
    y = torch.roll(x[:, :1], 3, dims=-1) - 0.5 * x[:, 1:]  # a linear operator the FNO holds
    curves = []
    for net in (ref, ours):
        opt = torch.optim.Adam(net.parameters(), 1e-2)
        losses = []
        for _ in range(40):
            opt.zero_grad()
            loss = (net(x) - y).square().mean()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        curves.append(losses)
    assert curves[0][-1] < 0.5 * curves[0][0]  # it learns
    assert max(abs(a - b) / a for a, b in zip(*curves)) < 1e-3


def test_unsupported_neuraloperator_options_are_refused():
    ref = NeuralopFNO(n_modes=(8, 8), in_channels=2, out_channels=1, hidden_channels=8, n_layers=2,
                      factorization="tucker", rank=0.5)
    with pytest.raises(ValueError, match="factorized"):
        FourierNet.from_neuralop(ref)
    with pytest.raises(ValueError, match="even"):
        FourierNet(1, 1, (7, 8))


def test_fno_backend_option(tmp_path):
    net = FNO(t_in=3, t_out=2, modes=(8, 8), width=8, n_layers=2, backend="neuropde")
    assert isinstance(net.fno, FourierNet)
    assert net(torch.randn(1, 3, 33, 33)).shape == (1, 2, 33, 33)  # odd grids need no detour
    with pytest.raises(ValueError, match="backend=neuralop"):
        FNO(t_in=3, t_out=2, modes=(8, 8), backend="neuropde", factorization="tucker")
    with pytest.raises(ValueError, match="neuralop or neuropde"):
        FNO(t_in=3, t_out=2, modes=(8, 8), backend="jax")


def test_neuropde_backend_trains_and_predicts(data_root, tmp_path):
    cfg = compose("train", ["experiment=fno_tiny", "model.net.backend=neuropde", f"run_dir={tmp_path}"])
    metrics = train(cfg)
    assert metrics["test/rel_l2"] == metrics["test/rel_l2"]  # not NaN; learning: the test below
    from neuropde.run import predict
    out = predict(compose("predict", [f"ckpt={tmp_path}", f"run_dir={tmp_path / 'pred'}"]))
    assert out["test/rel_l2"] == pytest.approx(metrics["test/rel_l2"], rel=1e-4)


def test_compile_option_compiles_the_network_in_place():
    from neuropde.errors import UserError
    from neuropde.run import compile_network

    class Task(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = FourierNet(1, 1, (4, 4), 4, 1)

    task = Task()
    keys = set(task.state_dict())
    compile_network(task, False)
    assert task.net._compiled_call_impl is None
    compile_network(task, "reduce-overhead")
    assert task.net._compiled_call_impl is not None and set(task.state_dict()) == keys
    with pytest.raises(UserError, match="reduce-overhead"):
        compile_network(task, "fast")


@pytest.mark.slow
def test_compiled_training_keeps_checkpoints_interchangeable(data_root, tmp_path):
    """compile=true trains the same network; its checkpoint loads into an uncompiled model."""
    cfg = compose("train", ["experiment=fno_tiny", "model.net.backend=neuropde", "compile=true",
                            "trainer.max_epochs=1", f"run_dir={tmp_path}"])
    metrics = train(cfg)
    assert metrics["test/rel_l2"] == metrics["test/rel_l2"]
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert not any("_orig_mod" in k for k in state)
    from neuropde.run import predict
    out = predict(compose("predict", [f"ckpt={tmp_path}", f"run_dir={tmp_path / 'pred'}"]))
    assert out["test/rel_l2"] == pytest.approx(metrics["test/rel_l2"], rel=1e-4)


def test_bf16_mixed_precision_keeps_spectra_in_fp32(data_root, tmp_path, monkeypatch):
    """trainer.precision=bf16-mixed runs; the Fourier layers compute in fp32 inside autocast.

    The tensors that reach the spectral contraction (both transforms) are recorded during the
    run: all float32, with autocast off inside, while the 1x1 layers around them ran in bf16.
    """
    from neuropde.nn import fourier_net, spectral

    seen, pointwise_dtypes = [], set()
    for name in ("_forward_dft", "_forward_fft"):
        original = getattr(spectral.SpectralConv, name)

        def recording(self, x, w, b, *args, _original=original, **kw):
            seen.append((x.dtype, w.dtype, None if b is None else b.dtype, torch.is_autocast_enabled(x.device.type)))
            return _original(self, x, w, b, *args, **kw)

        monkeypatch.setattr(spectral.SpectralConv, name, recording)
    original_pointwise = fourier_net._Pointwise.forward

    def pointwise(self, x):
        out = original_pointwise(self, x)
        pointwise_dtypes.add(out.dtype)
        return out

    monkeypatch.setattr(fourier_net._Pointwise, "forward", pointwise)
    cfg = compose("train", ["experiment=fno_tiny", "model.net.backend=neuropde", "trainer.precision=bf16-mixed",
                            "trainer.max_epochs=1", f"run_dir={tmp_path}"])
    metrics = train(cfg)
    assert metrics["test/rel_l2"] == metrics["test/rel_l2"]
    assert torch.bfloat16 in pointwise_dtypes  # autocast was in effect around the spectral layers
    assert seen, "no spectral contraction ran"
    assert all(x == w == torch.float32 and b in (None, torch.float32) and not autocast
               for x, w, b, autocast in seen), set(seen)


def test_observer_runs_on_the_neuropde_backend(data_root, tmp_path):
    """The observer's predictor and gain FNOs take backend=neuropde; the gate still starts nearly shut."""
    cfg = compose("train", ["experiment=observer_tiny", "model.net.predictor.backend=neuropde",
                            "model.net.gain_backend=neuropde", f"run_dir={tmp_path}"])
    from hydra.utils import instantiate

    net = instantiate(cfg.model.net)
    assert isinstance(net.predictor.fno, FourierNet) and isinstance(net.gain.gate.fno, FourierNet)
    assert torch.all(net.gain.gate.fno.projection.fc2.bias == cfg.model.net.gate_bias)
    metrics = train(cfg)
    assert metrics["test/rel_l2"] == metrics["test/rel_l2"]


def test_init_from_a_neuraloperator_checkpoint_into_the_neuropde_backend(trained_fno, tmp_path):
    """A checkpoint trained with backend=neuralop starts a backend=neuropde run as the same function."""
    from neuropde import checkpoint
    from neuropde.run import build_task

    run_dir, _ = trained_fno
    ckpt = checkpoint.read(run_dir)
    assert ckpt["neuropde"]["config"]["model"]["net"].get("backend", "neuralop") == "neuralop"
    cfg = compose("train", ["experiment=fno_tiny", "model.net.backend=neuropde"])
    stats = ckpt["neuropde"]["stats"]
    ours, theirs = build_task(cfg, stats), build_task(compose("train", ["experiment=fno_tiny"]), stats)
    theirs.load_state_dict(ckpt["state_dict"])
    n = checkpoint.load_weights(ours, run_dir)
    assert n == len(ours.state_dict())  # every tensor came from the checkpoint
    x = torch.randn(2, cfg.data.window.t_in, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), rtol=1e-4, atol=1e-5)
