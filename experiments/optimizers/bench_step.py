"""Time one optimizer step of every rule against torch's AdamW and torch.optim.Muon, in one process.

    python experiments/optimizers/bench_step.py --device cpu|cuda [--width 2048 --matrices 15]

Three parameter sets: (1) `matrices` real square matrices of side `width` (defaults: 15 × 2048² ≈ 63M
on cuda; 8 × 512² ≈ 2.1M on cpu, where Newton–Schulz on 63M parameters takes minutes per step),
with the symmetric optimizer's row-norm and one-sided spectral maps timed on them too;
(2) the default SFNO's parameters (9.2M real numbers, mostly complex spectral weights), each
``optimizer=`` factory on the whole model; (3) the same matrices as frozen bases of rank-16 LoRA
adapters: AdaPreLoRA against AdamW on the same factors. Gradients are fixed random tensors; each
step is timed after warm-up (median, device synchronised).
Writes results/step_<device>.json: {set: {rule: {"ms": ..., "ratio_to_adamw": ...}}}.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from neuropde.models.sfno import SFNO
from neuropde.nn.lora import LoRALinear
from neuropde.optim import muon as M
from neuropde.optim.adapre_lora import AdaPreLoRA
from neuropde.optim.symmetric import symmetric

HERE = Path(__file__).resolve().parent


def timed(make_opt, params, device, warmup=3, repeats=10) -> float:
    opt = make_opt(params)
    for p in params:
        p.grad = torch.randn_like(p)
    times = []
    for i in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


class _Refill:
    """AdaPreLoRA whose layers get their full-weight gradient back before each step (the refill is
    one copy per layer, timed along with the step; a training step records it in the backward)."""

    def __init__(self, opt, layers):
        self.opt, self.saved = opt, [(layer, layer.full_grad.clone()) for layer in layers]

    def step(self):
        for layer, g in self.saved:
            layer.full_grad.copy_(g)
        self.opt.step()


def adamw(params, device):
    kw = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4, **kw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--matrices", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    device = torch.device(args.device)
    width = args.width or (2048 if device.type == "cuda" else 512)
    count = args.matrices or (15 if device.type == "cuda" else 8)
    torch.manual_seed(0)
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "threads": torch.get_num_threads(), "torch": torch.__version__}

    # (1) real square matrices: every rule on exactly the same parameters
    mats = [nn.Parameter(torch.randn(width, width, device=device) / width ** 0.5) for _ in range(count)]
    rules = {
        "adamw": lambda ps: adamw(ps, device),
        "torch_muon": lambda ps: torch.optim.Muon(ps, lr=1e-3, adjust_lr_fn="match_rms_adamw"),
        **{name: (lambda r: lambda ps: M.MatrixMuon(ps, lr=1e-3, rule=r, ns_steps=8 if r == "randomized" else
                                                    (1 if r == "hybrid_auon" else 5)))(rule)
           for name, rule in [("muon", "muon"), ("auon", "auon"), ("hybrid_auon", "hybrid_auon"),
                              ("root", "root"), ("muon_randomized", "randomized"),
                              ("symmetric_rownorm", "rownorm"), ("symmetric_right_spectral", "right_spectral")]},
    }
    table = {name: timed(make, mats, device, repeats=args.repeats) for name, make in rules.items()}
    results[f"matrices_{count}x{width}x{width}"] = {
        n: {"ms": round(ms, 3), "ratio_to_adamw": round(ms / table["adamw"], 3)} for n, ms in table.items()}

    # head to head, the acceptance's comparison: the two Muons alternate steps on identical copies of
    # the matrices, so that drift of the machine (turbo, other jobs) hits both alike
    pair = {name: rules[name]([nn.Parameter(m.detach().clone()) for m in mats]) for name in ("torch_muon", "muon")}
    for opt in pair.values():
        for group in opt.param_groups:
            for q in group["params"]:
                q.grad = torch.randn_like(q)
    times = {name: [] for name in pair}
    for i in range(3 + 4 * args.repeats):
        for name in (("torch_muon", "muon") if i % 2 else ("muon", "torch_muon")):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            pair[name].step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= 3:
                times[name].append(1e3 * (time.perf_counter() - t))
    med = {name: statistics.median(v) for name, v in times.items()}
    results["muon_vs_torch_muon_interleaved"] = {"torch_muon_ms": round(med["torch_muon"], 3),
                                                 "muon_ms": round(med["muon"], 3),
                                                 "ratio": round(med["muon"] / med["torch_muon"], 3),
                                                 "steps_each": 4 * args.repeats}

    # (2) the default SFNO: each optimizer= factory on the whole model
    net = SFNO().to(device)
    params = list(net.parameters())
    factories = {"adamw": lambda _: adamw(params, device),
                 **{n: (lambda f: lambda _: f(net))(getattr(M, n))
                    for n in ("muon", "auon", "hybrid_auon", "root", "muon_randomized")},
                 "symmetric": lambda _: symmetric(net)}
    table = {name: timed(make, params, device, repeats=args.repeats) for name, make in factories.items()}
    results["sfno_default"] = {n: {"ms": round(ms, 3), "ratio_to_adamw": round(ms / table["adamw"], 3)}
                               for n, ms in table.items()}

    # (3) LoRA factors (rank 16) on the same matrices: AdaPreLoRA reads the full-weight gradient
    layers = []
    for _ in range(count):
        layer = LoRALinear(nn.Linear(width, width, bias=False).to(device), rank=16)
        layer.full_grad.normal_()
        layers.append(layer)
    factors = [p for layer in layers for p in (layer.lora_B, layer.lora_A)]
    for layer in layers:
        layer.lora_B.data.normal_()  # past the first step: both factors nonzero

    def adapre(_):
        opt = AdaPreLoRA(layers, lr=1e-3)
        # the step clears the recorded gradient; keep it filled for every timed step
        return _Refill(opt, layers)

    table = {"adamw": timed(lambda ps: adamw(ps, device), factors, device, repeats=args.repeats),
             "adapre_lora": timed(adapre, factors, device, repeats=args.repeats)}
    results[f"lora_rank16_{count}x{width}x{width}"] = {
        n: {"ms": round(ms, 3), "ratio_to_adamw": round(ms / table["adamw"], 3)} for n, ms in table.items()}

    (HERE / "results").mkdir(exist_ok=True)
    out = HERE / "results" / f"step_{device.type}.json"
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
