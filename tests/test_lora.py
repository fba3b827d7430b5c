"""LoRA adapters of every kind (nn.Linear, 1×1 convolutions, FNO spectral weights) on LeMON's FNO
backbone: start at the base model, train only the factors, merge into plain weights exactly, and
go through ``train`` / ``init_from`` / ``predict`` with spectral adapters."""
import copy
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from neuropde.checkpoint import _merge_lora
from neuropde.errors import UserError
from neuropde.models.lemon import LeMONNet
from neuropde.nn.lora import (LoRAConv1x1, LoRALinear, LoRASpectralWeight, add_lora, lora_delta,
                              lora_layers)
from neuropde.tasks.lemon import LeMONTask

N, T = 32, 3
ALL = ("linear", "conv1x1", "spectral")
OPT = {"_target_": "neuropde.optim.factories.adamw", "lr": 1e-3, "weight_decay": 0.0}


pytestmark = pytest.mark.usefixtures("one_thread")


def fno_net(use_context: bool = True, width: int = 8, modes: int = 8, layers: int = 2, d: int = 8) -> LeMONNet:
    return LeMONNet(N, T, backbone="fno", use_context=use_context, d_model=d, n_heads=2, d_ff=16,
                    patch_size=8, ctx_frames=2, fno_modes=modes, fno_width=width, fno_layers=layers)


def inputs(seed: int = 0, b: int = 3, e: int = 2) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, N, generator=g), torch.randn(b, e, N, generator=g), torch.randn(b, e, T, N, generator=g)


def spectral_convs(net: nn.Module) -> list[nn.Module]:
    from neuralop.layers.spectral_convolution import SpectralConv

    return [m for m in net.modules() if isinstance(m, SpectralConv)]


def expected_adapter_params(net: nn.Module, rank: int, targets=ALL) -> int:
    """r·(in + out) per linear / 1×1-conv layer, r·(in + out)·(retained modes) per spectral weight,
    counted on the plain net (complex entries count once, as numel does)."""
    count = 0
    for m in net.modules():
        if "linear" in targets and isinstance(m, nn.Linear):
            count += rank * (m.in_features + m.out_features)
        if "conv1x1" in targets and isinstance(m, nn.Conv1d):
            assert m.kernel_size == (1,)
            count += rank * (m.in_channels + m.out_channels)
    if "spectral" in targets:
        for m in spectral_convs(net):
            count += rank * (m.in_channels + m.out_channels) * math.prod(m.weight.shape[2:])
    return count


def randomize_adapters(net: nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "lora_" in name:
                noise = torch.randn(p.shape, generator=g, dtype=p.real.dtype)
                if p.is_complex():
                    noise = torch.complex(noise, torch.randn(p.shape, generator=g, dtype=p.real.dtype))
                p.copy_(0.3 * noise)


def tensors(sd: dict) -> dict:
    """neuraloperator adds a ``_metadata`` entry to its state dict (the tasks drop it too)."""
    return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def alpha_ckpt(alpha: float) -> dict:
    return {"neuropde": {"config": {"model": {"task": {"lora_alpha": alpha}}}}}


# ------------------------------------------------------------------------------- adapters
def test_adapted_net_is_the_base_net_at_init_and_only_factors_train():
    torch.manual_seed(0)
    net = fno_net()
    base = copy.deepcopy(net)
    x = inputs()
    names = add_lora(net, rank=3, alpha=0.5, targets=ALL)
    assert torch.equal(net(*x), base(*x))  # B = 0: exactly the base model
    kinds = {type(m) for m in net.modules()}
    assert {LoRALinear, LoRAConv1x1, LoRASpectralWeight} <= kinds
    spectral = [n for n in names if n.endswith(".weight") and "convs" in n]
    assert len(spectral) == 2  # one per Fourier layer
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    assert trainable and all(n.rsplit(".", 1)[-1] in ("lora_A", "lora_B") for n in trainable)
    assert len(trainable) == 2 * len(names)
    assert lora_layers(net) and all(isinstance(m, LoRALinear) for m in lora_layers(net))
    # every 1x1 conv and spectral weight of the backbone is adapted: nothing trainable is left plain
    assert not any(isinstance(m, nn.Conv1d) and p.requires_grad for m in net.modules() for p in m.parameters())
    # default targets: today's behaviour, nn.Linear only (the FNO backbone keeps no adapter)
    plain = fno_net()
    assert all(".backbone." not in f".{n}" for n in add_lora(plain, rank=2))


def test_adapter_parameter_count_matches_the_formula():
    torch.manual_seed(0)
    for targets in (("linear",), ("conv1x1",), ("spectral",), ALL):
        net = fno_net()
        want = expected_adapter_params(net, 3, targets)
        add_lora(net, rank=3, targets=targets)
        assert sum(p.numel() for p in net.parameters() if p.requires_grad) == want, targets
    # lemon_quick's FNO backbone (width 32, 16 modes -> 9 rfft bins, 4 layers, t_out 31, d 64):
    # spectral 4·9·r·(32 + 32) = 2304 r complex; 1x1 convs (lifting 66->64->32, 4 skips 32->32,
    # 4 channel MLPs 32->16->32, projection 32->64->31) 1057 r real
    net = LeMONNet(64, 31, backbone="fno", fno_modes=16, fno_width=32, fno_layers=4)
    add_lora(net.backbone, rank=4, targets=("spectral",))
    assert sum(p.numel() for p in net.backbone.parameters() if p.requires_grad) == 2304 * 4
    net = LeMONNet(64, 31, backbone="fno", fno_modes=16, fno_width=32, fno_layers=4)
    add_lora(net.backbone, rank=4, targets=("conv1x1",))
    assert sum(p.numel() for p in net.backbone.parameters() if p.requires_grad) == 1057 * 4


@pytest.mark.parametrize("targets", [("linear",), ("conv1x1",), ("spectral",), ALL])
def test_merged_plain_net_computes_what_the_adapted_net_computes(targets):
    """Random factor values, then the checkpoint merge W₀ + α·ΔW into a plain net: same forward."""
    torch.manual_seed(0)
    net = fno_net()
    plain = copy.deepcopy(net)
    x = inputs()
    add_lora(net, rank=2, alpha=0.7, targets=targets)
    randomize_adapters(net)
    adapted = net(*x)
    assert not torch.allclose(adapted, plain(*x), atol=1e-3)  # the adapters do change the output
    own = tensors(plain.state_dict())
    merged = _merge_lora(tensors(net.state_dict()), own, alpha_ckpt(0.7), "test")
    assert set(merged) == set(own)
    plain.load_state_dict(merged)
    assert torch.allclose(plain(*x), adapted, atol=1e-5)


def test_spectral_update_is_alpha_times_a_per_mode_product():
    from neuralop.layers.spectral_convolution import SpectralConv

    torch.manual_seed(0)
    conv = SpectralConv(3, 5, n_modes=(6,))
    w0 = conv.weight.tensor.detach().clone()  # (in, out, modes) = (3, 5, 4)
    lora = LoRASpectralWeight(conv.weight, rank=2, alpha=0.5)
    assert lora.lora_A.shape == (4, 3, 2) and lora.lora_B.shape == (4, 2, 5) and lora.lora_A.is_complex()
    randomize_adapters(lora)
    w = lora.to_tensor()
    for k in range(4):
        assert torch.allclose(w[:, :, k], w0[:, :, k] + 0.5 * lora.lora_A[k] @ lora.lora_B[k], atol=1e-6)
    conv.weight = lora
    x = torch.randn(2, 3, 16)
    reference = SpectralConv(3, 5, n_modes=(6,))
    with torch.no_grad():
        reference.weight.tensor.copy_(w)
        reference.bias.copy_(conv.bias)
    assert torch.allclose(conv(x), reference(x), atol=1e-5)


def test_conv_adapter_is_the_matrix_update_on_a_2d_conv():
    torch.manual_seed(0)
    base = nn.Conv2d(4, 6, kernel_size=1)
    layer = LoRAConv1x1(base, rank=2, alpha=2.0)
    randomize_adapters(layer)
    x = torch.randn(2, 4, 5, 7)
    W = base.weight[:, :, 0, 0] + 2.0 * layer.lora_B @ layer.lora_A
    assert torch.allclose(layer(x), torch.einsum("oi,bihw->bohw", W, x) + base.bias[:, None, None], atol=1e-5)
    assert layer.out_channels == 6 and torch.equal(layer.weight, layer.merged_weight())
    assert torch.equal(lora_delta(layer.lora_A, layer.lora_B, 2.0, base.weight.shape)[:, :, 0, 0],
                       2.0 * (layer.lora_B @ layer.lora_A))
    with pytest.raises(ValueError, match="1x1"):
        LoRAConv1x1(nn.Conv2d(4, 6, kernel_size=3), rank=2)


def test_functional_call_with_fast_factor_weights():
    """LeMON's few-shot adaptation swaps in fast factor weights through torch.func.functional_call."""
    torch.manual_seed(0)
    net = fno_net()
    add_lora(net, rank=2, targets=ALL)
    x = inputs()
    slow = {k: p for k, p in net.named_parameters() if p.requires_grad}
    fast = {k: p.detach() + 0.1 * torch.randn_like(p) for k, p in slow.items()}
    out = functional_call(net, fast, x)
    assert not torch.allclose(out, net(*x), atol=1e-4)
    with torch.no_grad():
        for k, p in slow.items():
            p.copy_(fast[k])
    assert torch.allclose(out, net(*x), atol=1e-6)


def test_spectral_factors_get_gradients_and_adam_fits_a_spectral_change():
    """Only spectral adapters on the operator-blind FNO net (no nn.Linear at all): the target is
    the base net with its spectral weights moved by a rank-1 per-mode update, so the adapters
    can reach it; 30 Adam steps lower the loss below 0.3 of its start (0.10 measured)."""
    torch.manual_seed(0)
    net = fno_net(use_context=False)
    u0 = torch.randn(8, N)
    teacher = copy.deepcopy(net)
    with torch.no_grad():
        for conv in spectral_convs(teacher):
            w = conv.weight.tensor
            a = torch.randn(w.shape[2], w.shape[0], 1, dtype=w.dtype)
            b = torch.randn(w.shape[2], 1, w.shape[1], dtype=w.dtype)
            w += torch.movedim(a @ b, (-2, -1), (0, 1))
        target = teacher(u0)
    add_lora(net, rank=2, alpha=1.0, targets=("spectral",))
    params = [p for p in net.parameters() if p.requires_grad]
    assert params and all(p.is_complex() for p in params)
    loss = (net(u0) - target).pow(2).mean()
    loss.backward()
    spectral = [m for m in net.modules() if isinstance(m, LoRASpectralWeight)]
    assert all(m.lora_B.grad.abs().max() > 0 for m in spectral)  # B = 0: ∂/∂A = 0 at the start
    first = loss.item()
    opt = torch.optim.Adam(params, lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        loss = (net(u0) - target).pow(2).mean()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first


def test_bad_targets_name_the_fix():
    from neuralop.layers.spectral_convolution import SpectralConv

    with pytest.raises(ValueError, match="choose among"):
        add_lora(fno_net(), rank=2, targets=("attention",))
    with pytest.raises(UserError, match="lora_targets"):
        LeMONTask(fno_net(), OPT, stage="finetune", lora_rank=2, lora_targets=["conv"])
    tucker = nn.Sequential(SpectralConv(4, 4, n_modes=(8,), factorization="tucker", rank=0.5))
    with pytest.raises(ValueError, match="dense"):
        add_lora(tucker, rank=2, targets=("spectral",))
    # the operator-blind FNO net has no nn.Linear: the error says which targets to add
    task = LeMONTask(fno_net(use_context=False), OPT, stage="finetune", lora_rank=2)
    with pytest.raises(UserError, match="conv1x1"):
        task.apply_lora()


def test_adapre_lora_leaves_conv_and_spectral_factors_to_adamw():
    from neuropde.optim.adapre_lora import adapre_lora

    torch.manual_seed(0)
    net = fno_net()
    add_lora(net, rank=2, targets=ALL)
    opt = adapre_lora(net, lr=1e-2)
    spectral_B = next(m.lora_B for m in net.modules() if isinstance(m, LoRASpectralWeight))
    linear_B = lora_layers(net)[0].lora_B
    x = inputs()
    before = (spectral_B.detach().clone(), linear_B.detach().clone())

    def closure():
        opt.zero_grad()
        loss = net(*x).pow(2).mean()
        loss.backward()
        return loss

    opt.step(closure)
    assert not torch.equal(spectral_B, before[0]) and not torch.equal(linear_B, before[1])


# ------------------------------------------------------------------- train / init_from / predict
def test_lemon_finetune_with_every_adapter_kind_through_train(data_root, tmp_path):
    """lemon_tiny (FNO backbone) pretrained one epoch, then LoRA fine-tuned with adapters on the
    linear, 1×1-conv and spectral layers: base weights frozen, every kind trained; the checkpoint
    loads back into a LoRA task (as predict.py does) and, through init_from=, into a plain task
    (merged weights); both predict the same."""
    from neuropde import checkpoint
    from neuropde.run import build_datamodule, build_task, predict, train
    from tests.conftest import compose

    pre, ft = tmp_path / "pre", tmp_path / "ft"
    train(compose("train", ["experiment=lemon_tiny", "trainer.max_epochs=1", f"run_dir={pre}"]))
    lora = ["stage=finetune", "data.families=[heat]", "data.n_shots=3", "model.task.lora_rank=2",
            "model.task.lora_alpha=0.5", "model.task.lora_targets=[linear,conv1x1,spectral]"]
    m = train(compose("train", ["experiment=lemon_tiny", *lora, f"init_from={pre}", f"run_dir={ft}"]))
    assert math.isfinite(m["test/rel_l2"])
    base = torch.load(pre / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    tuned = torch.load(ft / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    moved = {k for k, v in tuned.items() if k.endswith("lora_B") and v.abs().max() > 0}
    assert any(".convs." in k for k in moved) and any(".fno_skips." in k for k in moved)
    assert any(".encoder." in k for k in moved)
    for k, v in tuned.items():
        plain = k.replace(".base.", ".")
        if "lora_" not in k and plain in base and not k.startswith(("norm_", "out_")):
            assert torch.equal(v, base[plain]), k  # frozen under LoRA

    cfg = compose("train", ["experiment=lemon_tiny", "data.families=[heat]", "data.n_shots=3",
                            f"run_dir={tmp_path / 'x'}"])
    dm = build_datamodule(cfg, progress=False)
    dm.setup("fit")
    plain = build_task(cfg, dm.stats)
    checkpoint.load_weights(plain, ft / "checkpoints" / "last.ckpt")
    assert not any("lora_" in k for k in plain.state_dict())
    again = build_task(compose("train", ["experiment=lemon_tiny", *lora, f"run_dir={tmp_path / 'y'}"]), dm.stats)
    again.load_state_dict(tuned)  # wraps the net first: the adapter keys are recognised
    batch = next(iter(dm.val_dataloader()))
    plain.eval(), again.eval()
    with torch.no_grad():
        assert torch.allclose(plain.predict_step(batch, 0), again.predict_step(batch, 0), atol=1e-5)
    p = predict(compose("predict", [f"ckpt={ft}", f"run_dir={tmp_path / 'pred'}"]))
    assert math.isfinite(p["test/rel_l2"])


def test_adapre_lora_without_linear_adapters_names_the_fix():
    from neuropde.optim.adapre_lora import adapre_lora

    net = fno_net()
    add_lora(net, rank=2, targets=("conv1x1", "spectral"))
    with pytest.raises(UserError, match="add linear to model.task.lora_targets"):
        adapre_lora(net)
