"""MG-TFNO study: parameters, memory per call, time and accuracy of dense FNO, TFNO and MG-TFNO
on the same data and budget (arXiv 2310.00120; see README.md here).

    python experiments/mg_tfno/run.py --quick   # CPU: ns2d_hr_small (64², 512 pairs), experiment=mg_tfno_quick budget
    python experiments/mg_tfno/run.py --full    # GPU: ns2d_hr (128², 2000 pairs)

Every variant is ``model=mg_tfno`` with other settings (a dense FNO is ``factorization=dense
levels=0``), trained with the quick experiment's budget; a variant whose run dir holds
``metrics.json`` is not trained again. Writes ``results/<mode>.json`` with the keys ``params``,
``rel_l2``, ``h1``, ``peak_mem_mb_per_call``, ``sec_per_epoch`` (each a dict by variant) and
``compression`` (dense FNO's parameters / the variant's).

Peak memory of one training call (forward + backward): one full sample for FNO/TFNO, one patch
for MG-TFNO. On CUDA it is ``torch.cuda.max_memory_allocated`` above the parameters; on the CPU,
which has no allocator statistics, it is the bytes of the tensors autograd saves for the backward
pass plus the output (the activation memory that dominates a training call), counted by a
saved-tensor hook with each storage counted once.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from neuropde.data.store import atomic_write_json
from neuropde.run import CONF_DIR, train

HERE = Path(__file__).resolve().parent

VARIANTS = {
    "fno": ["model.net.factorization=dense", "model.net.levels=0"],
    "tfno_tucker_0.05": ["model.net.factorization=tucker", "model.net.rank=0.05", "model.net.levels=0"],
    "tfno_tucker_0.1": ["model.net.factorization=tucker", "model.net.rank=0.1", "model.net.levels=0"],
    "tfno_tucker_0.2": ["model.net.factorization=tucker", "model.net.rank=0.2", "model.net.levels=0"],
    "tfno_cp": ["model.net.factorization=cp", "model.net.rank=0.1", "model.net.levels=0"],
    "tfno_tt": ["model.net.factorization=tt", "model.net.rank=0.1", "model.net.levels=0"],
    "mg_tfno_l1": ["model.net.factorization=tucker", "model.net.rank=0.1", "model.net.levels=1"],
    "mg_tfno_l2": ["model.net.factorization=tucker", "model.net.rank=0.1", "model.net.levels=2"],
}
MODES = {"quick": ["experiment=mg_tfno_quick"],
         "full": ["model=mg_tfno", "data=ns2d_hr", "trainer.max_epochs=100"]}


def compose(overrides: list[str]):
    from hydra import compose as _compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return _compose(config_name="train", overrides=overrides)


def call_memory_mb(model, x: torch.Tensor) -> float:
    """Peak memory (MiB) of one forward + backward call of ``model`` on ``x`` (see the module docstring)."""
    if x.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        model(x).square().mean().backward()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        if not isinstance(t, torch.nn.Parameter):
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = model(x)
    y.square().mean().backward()
    return (sum(seen.values()) + y.numel() * y.element_size()) / 2 ** 20


def one_call_memory(net, resolution: int, t_in: int, device) -> float:
    """Memory of one training call at ``resolution``: one full sample, or one patch of MG-TFNO."""
    net = net.to(device)
    x = torch.randn(1, t_in, resolution, resolution, device=device)
    if net.patching.levels > 0:
        return call_memory_mb(net.net, net.patching.patch(x)[:1])
    return call_memory_mb(net, x)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--quick", action="store_true", help="CPU-sized: ns2d_hr_small, mg_tfno_quick budget")
    g.add_argument("--full", action="store_true", help="GPU-sized: ns2d_hr at 128²")
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--out", default=str(HERE / "runs"), help="where run dirs go")
    args = p.parse_args()
    mode = "quick" if args.quick else "full"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = {k: {} for k in ("params", "compression", "rel_l2", "h1", "peak_mem_mb_per_call", "sec_per_epoch")}
    for name in args.variants:
        run = Path(args.out) / mode / name
        cfg = compose(MODES[mode] + VARIANTS[name] + [f"run_dir={run}"])
        if (run / "metrics.json").exists():
            metrics = json.loads((run / "metrics.json").read_text())
        else:
            t0 = time.perf_counter()
            metrics = train(cfg)
            print(f"{name}: trained in {time.perf_counter() - t0:.0f} s", flush=True)
        from hydra.utils import instantiate

        net = instantiate(cfg.model.net)
        results["params"][name] = metrics["params"]
        results["rel_l2"][name] = metrics["test/rel_l2"]
        results["h1"][name] = metrics["test/h1"]
        results["sec_per_epoch"][name] = metrics.get("sec_per_epoch")
        results["peak_mem_mb_per_call"][name] = round(
            one_call_memory(net, int(cfg.data.resolution), int(cfg.data.window.t_in), device), 3)
    if "fno" in results["params"]:
        results["compression"] = {k: results["params"]["fno"] / v for k, v in results["params"].items()}
    results["machine"] = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                          "threads": torch.get_num_threads(), "torch": torch.__version__,
                          "python": platform.python_version(),
                          "memory_measure": "cuda max_memory_allocated" if device.type == "cuda"
                          else "bytes saved for backward + output"}
    (HERE / "results").mkdir(exist_ok=True)
    atomic_write_json(HERE / "results" / f"{mode}.json", results)
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=1))


if __name__ == "__main__":
    main()
