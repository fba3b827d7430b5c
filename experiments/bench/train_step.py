"""Training step of an FNO: neuropde's FourierNet against neuraloperator's FNO, same network.

    python experiments/bench/train_step.py --device cpu            # both workloads, CPU sizes
    python experiments/bench/train_step.py --device cuda --workloads 64 256

Workloads (the issue's peer figures were measured on an H200):

* ``train_step_64``: 64², batch 20, 12 modes, width 20, 4 layers, 10 -> 10 channels, AdamW.
* ``train_step_256``: 256², batch 16, 32 modes, width 64, 4 layers; on a CPU batch 2 (one
  neuraloperator step at batch 16 takes seconds there). neuraloperator's TFNO (Tucker, rank
  0.05) is timed beside it.

Both networks start from the same weights (``FourierNet.from_neuralop``), take the same batch and
the relative L2 loss, and step AdamW (fused where torch has it, else foreach). One step is
zero_grad + forward + loss + backward + optimizer step. Every variant is built and warmed up
first, then all are timed in interleaved rounds (medians), so machine drift hits them alike. Variants: ``eager``; ``compiled``
(``torch.compile``); on CUDA also ``compiled_cudagraphs`` (``mode="reduce-overhead"``) and
``bf16`` (autocast bf16 on the pointwise layers, spectral layers stay fp32, compiled); eager
with the 1x1 layers run the other way (``ours_eager_conv`` on a CPU, ``ours_eager_gemm`` on CUDA). The peer
is timed eager (its headline) and compiled. ``--variants`` picks a subset. ``ours`` in the result file is the fastest of our
variants that ``train.py`` can run; every variant's time is in ``variants``.

Writes ``results/train_step_<n>_<device>.json``, unit samples/s.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import count_kernel_ops, interleaved_ms, median_ms, pick_device, write_result  # noqa: E402

from neuropde.losses import rel_l2  # noqa: E402
from neuropde.nn import FourierNet  # noqa: E402

WORKLOADS = {  # name: (n, batch on cuda, batch on cpu, modes, width)
    64: (64, 20, 20, 12, 20),
    256: (256, 16, 2, 32, 64),
}
CHANNELS, LAYERS = 10, 4


def make_optimizer(params, device: torch.device) -> torch.optim.Optimizer:
    """AdamW, fused when torch supports it for these parameters (complex ones included)."""
    params = list(params)
    try:
        opt = torch.optim.AdamW(params, lr=1e-3, fused=True)
        for p in params:
            p.grad = torch.zeros_like(p)
        opt.step()  # fused may refuse a dtype/device only at the first step
        opt = torch.optim.AdamW(params, lr=1e-3, fused=True)
    except (RuntimeError, ValueError):
        opt = torch.optim.AdamW(params, lr=1e-3, foreach=True)
    for p in params:
        p.grad = None
    return opt


def training_step(model, x, y, device: torch.device, bf16: bool = False):
    """A closure running one training step of ``model`` on (x, y)."""
    opt = make_optimizer(model.parameters(), device)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = rel_l2(model(x).float(), y)
        loss.backward()
        opt.step()
        return loss

    return step, opt


VARIANTS = ["peer_eager", "peer_tfno", "peer_compiled", "ours_eager", "ours_eager_fft", "ours_eager_conv",
            "ours_eager_gemm", "ours_compiled",
            "ours_compiled_cudagraphs", "ours_bf16_compiled"]
CUDA_ONLY = {"ours_compiled_cudagraphs", "ours_bf16_compiled"}


def run_workload(n_key: int, device: torch.device, repeats: int, variants_wanted: list[str],
                 batch: int | None = None, results: str | None = None, budget: float | None = None) -> dict:
    from neuralop.models import FNO

    n, batch_cuda, batch_cpu, modes, width = WORKLOADS[n_key]
    batch = batch or (batch_cuda if device.type == "cuda" else batch_cpu)
    torch.manual_seed(0)
    x = torch.randn(batch, CHANNELS, n, n, device=device)
    y = torch.randn(batch, CHANNELS, n, n, device=device)

    def peer(**kw):
        return FNO(n_modes=(modes, modes), in_channels=CHANNELS, out_channels=CHANNELS,
                   hidden_channels=width, n_layers=LAYERS, **kw).to(device)

    reference = peer()
    variants: dict[str, dict] = {}
    steps: dict[str, object] = {}
    calls = 10 if device.type == "cuda" else (3 if n == 64 else 1)

    started = time.perf_counter()

    def prepare(name, make, bf16=False, compile_mode=None, who="ours"):
        """Build, compile and warm up one variant; time it later with the others."""
        if name not in variants_wanted or (name in CUDA_ONLY and device.type != "cuda"):
            return
        # eager variants are cheap to prepare and needed for the ratio: the budget skips compiled ones
        if compile_mode is not None and budget is not None and time.perf_counter() - started > budget:
            variants[name] = {"who": who, "skipped": f"preparation budget of {budget:.0f} s spent"}
            print(f"{name}: skipped (budget)")
            return
        model = make()
        if compile_mode is not None:
            model = torch.compile(model, mode=compile_mode)
        step, _ = training_step(model, x, y, device, bf16)
        t0 = time.perf_counter()
        try:
            median_ms(step, device, calls=1, repeats=1, warmup=3)  # compilation, autotuning, plans
        except Exception as err:  # a variant the platform cannot run is reported, not fatal
            variants[name] = {"who": who, "error": f"{type(err).__name__}: {str(err)[:200]}"}
            print(f"{name}: failed ({variants[name]['error']})")
            return
        variants[name] = {"who": who, "warmup_s": round(time.perf_counter() - t0, 1)}
        if compile_mode is None:  # what an eager step dispatches: its kernel launches on a GPU
            variants[name]["kernel_ops_per_step"] = count_kernel_ops(step)
        steps[name] = step

    n_params = sum(p.numel() * (2 if p.is_complex() else 1) for p in reference.parameters())

    def ours(transform="auto", pointwise="auto"):
        net = FourierNet.from_neuralop(reference, transform=transform, pointwise=pointwise).to(device)
        assert sum(p.numel() * (2 if p.is_complex() else 1) for p in net.parameters()) == n_params
        return net

    prepare("peer_eager", lambda: reference, who="peer")
    if n_key == 256:
        prepare("peer_tfno", lambda: peer(factorization="tucker", rank=0.05), who="peer")
    prepare("peer_compiled", peer, compile_mode="default", who="peer")
    prepare("ours_eager", ours)
    prepare("ours_eager_fft", lambda: ours("fft"))
    # the 1x1 layers the other way than "auto" picks on this device (conv on CUDA, gemm elsewhere)
    other = "ours_eager_gemm" if device.type == "cuda" else "ours_eager_conv"
    prepare(other, lambda: ours(pointwise=other.rsplit("_", 1)[1]))
    prepare("ours_compiled", ours, compile_mode="default")
    prepare("ours_compiled_cudagraphs", ours, compile_mode="reduce-overhead")
    prepare("ours_bf16_compiled", ours, bf16=True, compile_mode="default")

    for name, ms in interleaved_ms(steps, device, calls, repeats).items():
        variants[name].update(ms=round(ms, 3), samples_per_s=round(1e3 * batch / ms, 2))
        print(f"{name:>24}: {ms:9.2f} ms  {1e3 * batch / ms:9.1f} samples/s")

    # train.py options: model.net.backend=neuropde with compile=false|true|reduce-overhead
    runnable = {"ours_eager", "ours_compiled", "ours_compiled_cudagraphs"}
    best_ms, best = min((v["ms"], k) for k, v in variants.items() if k in runnable and "ms" in v)
    return write_result(
        f"train_step_{n_key}", device, "samples/s", 1e3 * batch / best_ms,
        1e3 * batch / variants["peer_eager"]["ms"],
        ours_variant=best, peer_variant="peer_eager (neuraloperator FNO, eager)",
        config={"n": n, "batch": batch, "modes": modes, "width": width, "layers": LAYERS,
                "channels": CHANNELS, "parameters": n_params, "loss": "relative L2", "optimizer": "AdamW"},
        variants=variants, repeats=repeats, calls_per_repeat=calls, results=results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workloads", type=int, nargs="+", default=[64, 256], choices=sorted(WORKLOADS))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS,
                    help="which to time (peer_eager and one of ours_* are needed for the ratio)")
    ap.add_argument("--batch", type=int, default=None, help="override the workload's batch size")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for preparing variants; compiled ones past it are skipped (GPU lease)")
    ap.add_argument("--results", default=None, help="directory for the result file (default: results/)")
    args = ap.parse_args()
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    for n_key in args.workloads:
        run_workload(n_key, device, args.repeats, args.variants, args.batch, args.results, args.budget)


if __name__ == "__main__":
    main()
