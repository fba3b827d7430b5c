"""One Muon step: neuropde's batched Newton–Schulz against torch.optim.Muon, same matrices.

    python experiments/bench/optimizer_step.py --device cpu     # 8 matrices 512² (2.1M parameters)
    python experiments/bench/optimizer_step.py --device cuda    # 15 matrices 2048² (63M), as the issue

Both optimizers see identical copies of the matrices and the same fixed gradients, and both
orthogonalise in bf16 (torch.optim.Muon's choice; ours is ``ns_dtype=bfloat16``), five quintic
iterations. Their steps alternate (ABBA order) so that drift of the machine hits both alike. Fused
(CUDA) or foreach (CPU) AdamW on the same parameters is the floor of any optimizer step.

Writes ``results/optimizer_step_<device>.json``, unit steps/s: ``ours`` = neuropde's Muon,
``peer`` = torch.optim.Muon.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_ms, pick_device, write_result  # noqa: E402

from neuropde.optim.muon import MatrixMuon  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--width", type=int, default=None, help="matrix side (cuda 2048, cpu 512)")
    ap.add_argument("--matrices", type=int, default=None, help="how many (cuda 15, cpu 8)")
    ap.add_argument("--repeats", type=int, default=20, help="timed steps of each optimizer")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--results", default=None, help="directory for the result file (default: results/)")
    args = ap.parse_args()
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    width = args.width or (2048 if device.type == "cuda" else 512)
    count = args.matrices or (15 if device.type == "cuda" else 8)
    torch.manual_seed(0)
    base = [torch.randn(width, width, device=device) / width ** 0.5 for _ in range(count)]
    grads = [torch.randn_like(m) for m in base]

    def params():
        ps = [nn.Parameter(m.clone()) for m in base]
        for p, g in zip(ps, grads):
            p.grad = g.clone()
        return ps

    opts = {
        "torch_muon": torch.optim.Muon(params(), lr=1e-3, adjust_lr_fn="match_rms_adamw"),
        "muon": MatrixMuon(params(), lr=1e-3, rule="muon", ns_dtype="bfloat16"),
    }
    times = {name: [] for name in opts}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for i in range(3 + 2 * args.repeats):
        for name in (("torch_muon", "muon") if i % 2 else ("muon", "torch_muon")):
            sync()
            t0 = time.perf_counter()
            opts[name].step()
            sync()
            if i >= 3:
                times[name].append(1e3 * (time.perf_counter() - t0))
    ms = {name: statistics.median(v[: args.repeats]) for name, v in times.items()}

    kw = {"fused": True} if device.type == "cuda" else {"foreach": True}
    adamw = torch.optim.AdamW(params(), lr=1e-3, **kw)
    ms["adamw"] = median_ms(adamw.step, device, calls=1, repeats=args.repeats)
    n_params = count * width * width
    write_result("optimizer_step", device, "steps/s", 1e3 / ms["muon"], 1e3 / ms["torch_muon"],
                 ms={k: round(v, 3) for k, v in ms.items()},
                 muon_over_adamw=round(ms["muon"] / ms["adamw"], 2),
                 config={"matrices": count, "width": width, "parameters": n_params, "ns_dtype": "bfloat16",
                         "ns_steps": 5, "adamw": "fused" if device.type == "cuda" else "foreach"},
                 repeats=args.repeats, results=args.results)


if __name__ == "__main__":
    main()
