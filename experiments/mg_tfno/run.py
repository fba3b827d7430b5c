"""MG-TFNO study: parameters, memory per call, time and accuracy of dense FNO, TFNO and MG-TFNO
on the same data and budget (arXiv 2310.00120; see README.md here).

    python experiments/mg_tfno/run.py --quick   # CPU: ns2d_hr_t025 (64², T = 0.25, 512 pairs), mg_tfno_quick at 4 epochs
    python experiments/mg_tfno/run.py --full    # GPU: ns2d_hr (128², 2000 pairs)
    python experiments/mg_tfno/run.py --smoke   # every variant at test sizes (ns2d_hr_tiny, 1 epoch), into --out or a temp dir

Every variant is ``model=mg_tfno`` with other settings: spectral weights dense, per-layer Tucker
(rank 0.1) or one joint Tucker tensor for all layers (rank 0.1, ``model.net.joint=true``), at
multi-grid levels 0, 1 and 2 (a dense FNO is ``factorization=dense levels=0``), all trained with
the same budget. A variant whose run dir holds ``metrics.json`` is not trained again, and the
results file is rewritten after each variant, so a cut run resumes where it stopped. Writes
``results/<mode>.json`` with the keys ``params``, ``rel_l2``, ``h1``, ``peak_mem_mb_per_call``,
``sec_per_epoch`` (each a dict by variant) and ``compression`` (dense FNO's parameters / the
variant's), and ``tucker_contraction_ms_per_call`` (one training call of the Tucker-0.1 TFNO,
factorized contraction vs the dense weight rebuilt).

Peak memory of one training call (forward + backward): one full sample for FNO/TFNO, one patch
for MG-TFNO. On CUDA it is ``torch.cuda.max_memory_allocated`` above the parameters; on the CPU,
which has no allocator statistics, it is the bytes of the tensors autograd saves for the backward
pass plus the output (the activation memory that dominates a training call), counted by a
saved-tensor hook with each storage counted once.
"""
from __future__ import annotations

import argparse
import sys
import json
import platform
import time
from pathlib import Path

import torch

from neuropde.data.store import atomic_write_json
from neuropde.run import compose_config, train

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE.parent))  # experiments/: study.py
from study import study_dirs  # noqa: E402

# (spectral weights, multi-grid levels): dense FNO weights, per-layer Tucker (TFNO), and one Tucker tensor
# for all layers (the paper's joint factorisation), each on whole fields (L = 0) and on 4^L patches.
WEIGHTS = {"dense": ["model.net.factorization=dense"],
           "tucker": ["model.net.factorization=tucker", "model.net.rank=0.1"],
           "joint": ["model.net.factorization=tucker", "model.net.rank=0.1", "model.net.joint=true"]}
VARIANTS = {f"{w}_l{level}": WEIGHTS[w] + [f"model.net.levels={level}"] for level in (0, 1, 2) for w in WEIGHTS}
BASELINE = "dense_l0"  # the dense FNO on whole fields: compression is relative to it
# quick: 4 epochs (mg_tfno_quick has 20), the same for every variant, so that the 9 runs fit the CPU time.
MODES = {"quick": ["experiment=mg_tfno_quick", "data=ns2d_hr_t025", "trainer.max_epochs=4"],
         "full": ["model=mg_tfno", "data=ns2d_hr", "trainer.max_epochs=100"],
         "smoke": ["experiment=mg_tfno_tiny", "trainer.max_epochs=1", "logger=none"]}


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


def contraction_ms(cfg, device, repeats: int = 10) -> dict:
    """Median ms of one training call (batch of the loader's size) of the Tucker-0.1 TFNO with the
    factorized contraction and with the dense weight rebuilt per call."""
    import statistics

    from hydra.utils import instantiate

    out = {}
    x = torch.randn(int(cfg.data.loader.batch_size), int(cfg.data.window.t_in), int(cfg.data.resolution),
                    int(cfg.data.resolution), device=device)
    for impl in ("factorized", "reconstructed"):
        torch.manual_seed(0)
        net = instantiate(cfg.model.net, factorization="tucker", rank=0.1, levels=0, implementation=impl).to(device)
        times = []
        for i in range(repeats + 2):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            net(x).square().mean().backward()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= 2:
                times.append(1e3 * (time.perf_counter() - t))
        out[impl] = round(statistics.median(times), 2)
    return out


def same_settings(run: Path, cfg) -> bool:
    """Whether the finished run in ``run`` had the data, network and budget that ``cfg`` asks for."""
    from omegaconf import OmegaConf

    if not (run / "config.yaml").exists():
        return False
    old = OmegaConf.load(run / "config.yaml")
    pick = lambda c: OmegaConf.to_container(OmegaConf.masked_copy(c, ["data", "model", "trainer", "optimizer"]),  # noqa: E731
                                            resolve=True)
    return pick(old) == pick(cfg)


def markdown_table(results: dict) -> str:
    """The README table: one row per variant."""
    rows = ["| variant | parameters | compression vs dense FNO (L = 0) | peak MiB per training call | s per epoch "
            "| test rel. L2 | test rel. H1 |", "|---|---|---|---|---|---|---|"]
    fmt = lambda v, f: "—" if v is None else format(v, f)  # noqa: E731
    for name in [v for v in VARIANTS if v in results["params"]]:
        get = lambda key: results.get(key, {}).get(name)  # noqa: E731
        rows.append(f"| `{name}` | {get('params'):,} | {fmt(get('compression'), '.1f')}× | "
                    f"{fmt(get('peak_mem_mb_per_call'), '.2f')} | {fmt(get('sec_per_epoch'), '.1f')} | "
                    f"{fmt(get('rel_l2'), '.3f')} | {fmt(get('h1'), '.3f')} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--quick", action="store_true", help="CPU-sized: ns2d_hr_t025, mg_tfno_quick budget at 4 epochs")
    g.add_argument("--full", action="store_true", help="GPU-sized: ns2d_hr at 128²")
    g.add_argument("--smoke", action="store_true", help="every variant at test sizes (seconds), into --out or a temp dir")
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--out", default=None, help="where run dirs go (default: runs/ here)")
    p.add_argument("--memory-only", action="store_true",
                   help="no training: parameters, memory per call and contraction time only (-> results/<mode>_memory.json)")
    p.add_argument("--seed", type=int, default=0, help="training seed (the data are the same for every seed)")
    p.add_argument("--no-timing", action="store_true", help="skip the factorized-vs-reconstructed timing")
    p.add_argument("--resolution", type=int, default=None, help="with --memory-only: the field size (default: the data's)")
    p.add_argument("--epochs", type=int, default=None,
                   help="another training budget than the mode's (-> results/<mode>_e<N>.json, runs/<mode>_e<N>/)")
    args = p.parse_args(argv)
    mode = "quick" if args.quick else "smoke" if args.smoke else "full"
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    args.out, results_dir = study_dirs(HERE, "mg_tfno", args.smoke, args.out)
    # seed 0 and the mode's budget: results/<mode>.json, runs/<mode>/
    tag = mode + (f"_seed{args.seed}" if args.seed else "") + (f"_e{args.epochs}" if args.epochs else "")
    if args.epochs:
        MODES[mode] = [o for o in MODES[mode] if not o.startswith("trainer.max_epochs=")] + \
            [f"trainer.max_epochs={args.epochs}"]
    out_file = results_dir / f"{tag}{'_memory' if args.memory_only else ''}.json"
    keys = ("params", "compression", "rel_l2", "h1", "peak_mem_mb_per_call", "sec_per_epoch")
    results = json.loads(out_file.read_text()) if out_file.exists() and not args.memory_only else {}
    for k in keys:
        results.setdefault(k, {})
    results["settings"] = MODES[mode] + [f"seed={args.seed}"]
    results["machine"] = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                          "threads": torch.get_num_threads(), "torch": torch.__version__,
                          "python": platform.python_version(),
                          "memory_measure": "cuda max_memory_allocated" if device.type == "cuda"
                          else "bytes saved for backward + output"}

    def save() -> None:
        if BASELINE in results["params"]:
            results["compression"] = {k: results["params"][BASELINE] / v for k, v in results["params"].items()}
        out_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out_file, results)

    from hydra.utils import instantiate

    for name in args.variants:
        run = Path(args.out) / tag / name
        cfg = compose_config("train", MODES[mode] + VARIANTS[name] + [f"run_dir={run}", f"seed={args.seed}"]
                             + ([f"data.resolution={args.resolution}"] if args.resolution else []))
        results["resolution"] = int(cfg.data.resolution)
        net = instantiate(cfg.model.net)
        if args.memory_only:
            results["params"][name] = sum(p.numel() * (2 if p.is_complex() else 1) for p in net.parameters())
        else:
            if (run / "metrics.json").exists() and not same_settings(run, cfg):
                stale = run.with_name(f"{run.name}.stale-{int(time.time())}")
                print(f"{name}: {run} was trained with other settings; moved to {stale}", flush=True)
                run.rename(stale)
            if (run / "metrics.json").exists():
                metrics = json.loads((run / "metrics.json").read_text())
            else:
                t0 = time.perf_counter()
                metrics = train(cfg)
                print(f"{name}: trained in {time.perf_counter() - t0:.0f} s", flush=True)
            results["params"][name] = metrics["params"]
            results["rel_l2"][name] = metrics["test/rel_l2"]
            results["h1"][name] = metrics["test/h1"]
            results["sec_per_epoch"][name] = metrics.get("sec_per_epoch")
        results["peak_mem_mb_per_call"][name] = round(
            one_call_memory(net, int(cfg.data.resolution), int(cfg.data.window.t_in), device), 3)
        save()  # after every variant: a cut run keeps what it has measured
    if not args.no_timing:
        results["tucker_contraction_ms_per_call"] = contraction_ms(compose_config("train", MODES[mode]), device,
                                                                   repeats=2 if args.smoke else 10)
        save()
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=1))
    print(markdown_table(results))
    print(f"wrote {out_file}")


if __name__ == "__main__":
    main()
