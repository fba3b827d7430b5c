"""LoRA adapters and the AdaPreLoRA optimizer."""
import copy

import pytest
import torch

from neuropde.errors import UserError
from neuropde.nn.lora import LoRALinear, add_lora, lora_layers
from neuropde.optim.adapre_lora import AdaPreLoRA, adapre_lora, balanced_factor_step


def test_lora_starts_at_the_base_model_and_records_the_full_weight_gradient():
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 5)
    x = torch.randn(3, 4, 6)
    reference = base(x)
    layer = LoRALinear(base, rank=2, alpha=0.5)
    assert torch.equal(layer(x), reference)  # B = 0 at the start
    assert not base.weight.requires_grad and layer.lora_A.requires_grad
    layer.lora_B.data.normal_()
    layer.record_full_grad = True
    # the recorded G equals the gradient of the loss with respect to the merged weight
    W = layer.merged_weight().detach().requires_grad_(True)
    target = torch.randn(3, 4, 5)
    ((x @ W.T + base.bias - target) ** 2).sum().backward()
    ((layer(x) - target) ** 2).sum().backward()
    assert torch.allclose(layer.full_grad, W.grad, atol=1e-4)
    # and the factor gradients are α·G Aᵀ and α·Bᵀ G
    assert torch.allclose(layer.lora_B.grad, 0.5 * W.grad @ layer.lora_A.detach().T, atol=1e-4)


def test_balanced_step_reaches_the_least_squares_residual_and_splits_the_overlap():
    torch.manual_seed(0)
    m, n, r = 7, 6, 2
    Bt, At, D = torch.randn(m, r, dtype=torch.float64), torch.randn(r, n, dtype=torch.float64), \
        torch.randn(m, n, dtype=torch.float64)
    dB, dA = balanced_factor_step(Bt, At, D @ At.T, Bt.T @ D, damping=0.0)
    residual = (dB @ At + Bt @ dA - D).norm()
    # brute force: the linear map (ΔB, ΔA) -> ΔB Ã + B̃ ΔA as a matrix, solved by least squares
    cols = []
    for k in range(m * r):
        e = torch.zeros(m * r, dtype=torch.float64)
        e[k] = 1
        cols.append((e.view(m, r) @ At).flatten())
    for k in range(r * n):
        e = torch.zeros(r * n, dtype=torch.float64)
        e[k] = 1
        cols.append((Bt @ e.view(r, n)).flatten())
    K = torch.stack(cols, dim=1)
    best = torch.linalg.lstsq(K, D.flatten()[:, None], driver="gelsd").solution
    assert torch.allclose(residual, (K @ best - D.flatten()[:, None]).norm(), rtol=1e-8)
    # the part both factors can produce (P_B D P_A) is split half and half
    PB = Bt @ torch.linalg.solve(Bt.T @ Bt, Bt.T)
    PA = At.T @ torch.linalg.solve(At @ At.T, At)
    assert torch.allclose(PB @ (dB @ At) @ PA, PB @ (Bt @ dA) @ PA, atol=1e-10)
    assert torch.allclose(PB @ (dB @ At) @ PA, 0.5 * PB @ D @ PA, atol=1e-10)


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.Tanh(), torch.nn.Linear(32, 32), torch.nn.Tanh(),
                               torch.nn.Linear(32, 2))


def test_adapre_lora_fine_tunes_a_lora_model_and_rejects_a_model_without_lora(one_thread):
    net = _mlp()
    x = torch.rand(200, 3)
    y = torch.stack([torch.sin(2 * x[:, 0]) + x[:, 1], x[:, 2] * x[:, 0]], dim=1)
    with pytest.raises(UserError, match="LoRA"):
        adapre_lora(net)
    adapted = add_lora(net, rank=4, alpha=1.0)
    assert adapted == ["0", "2", "4"] and len(lora_layers(net)) == 3
    opt = adapre_lora(net, lr=1e-2)
    before = [layer.base.weight.clone() for layer in lora_layers(net)]
    losses = []
    for _ in range(100):
        opt.zero_grad()
        loss = (net(x) - y).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0], (losses[0], losses[-1])
    assert all(torch.equal(b, layer.base.weight) for b, layer in zip(before, lora_layers(net)))
    # the state round-trips: a fresh optimizer continues identically (deep-copied, as if saved:
    # load_state_dict keeps the tensors themselves, which both optimizers would then update)
    state = copy.deepcopy(opt.state_dict())
    net2 = _mlp()
    add_lora(net2, rank=4)
    net2.load_state_dict(net.state_dict())
    opt2 = adapre_lora(net2, lr=1e-2)
    opt2.load_state_dict(state)
    for model, o in ((net, opt), (net2, opt2)):
        o.zero_grad()
        (model(x) - y).pow(2).mean().backward()
        o.step()
    assert all(torch.allclose(a, b) for a, b in zip(net.parameters(), net2.parameters()))


def test_the_first_adapre_lora_step_moves_only_b_and_descends():
    """At the LoRA start (B = 0) the step moves B only, and the merged weight moves along −G."""
    torch.manual_seed(1)
    layer = LoRALinear(torch.nn.Linear(8, 6), rank=3)
    opt = AdaPreLoRA([layer], lr=1e-3)
    x, target = torch.randn(64, 8), torch.randn(64, 6)
    A0 = layer.lora_A.detach().clone()
    ((layer(x) - target) ** 2).mean().backward()
    G = layer.full_grad.clone()
    W0 = layer.merged_weight().detach()
    opt.step()
    assert torch.equal(layer.lora_A, A0)
    dW = layer.merged_weight().detach() - W0
    assert (dW * G).sum() < 0  # a descent direction
