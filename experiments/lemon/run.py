"""LeMON: does pretraining on more PDE families help learn a new family from ten trajectories?
(arXiv 2408.16168; README.md here).

    python experiments/lemon/run.py --quick   # CPU: experiment=lemon_quick, 3 seeds (~35 min on one core)
    python experiments/lemon/run.py --full    # GPU machine: 128 points, 64 frames, longer training

The held-out family is ``burgers`` (the last of ``data.generator.families``); the pretraining
families are the first k ∈ {1, 2, 4, 8} of the other eight. Methods, all with the same backbone
and the same fine-tuning budget on the same ten trajectories of ONE burgers operator (the first
one of the training split), tested on that operator's other ten initial conditions:

- ``scratch``: the network trained from its initialisation on the ten trajectories (it does not
  depend on k: one run per seed);
- ``finetune``: ``stage=pretrain`` on the k families, then every weight fine-tuned;
- ``lora``: the same pretrained network, only rank-4 LoRA adapters trained (``model.task.lora_rank``;
  the FNO's own layers are spectral and 1×1 convolutions, so the adapters sit in the operator
  encoder, the only ``nn.Linear`` layers) at a 10× larger learning rate (adapters start at zero);
- ``meta``: ``stage=meta`` (first-order MAML over operators) on the k families, then the same
  fine-tuning as ``finetune`` (``--meta-k`` to run it at fewer k: it is the costliest pretraining).

Pretraining runs a fixed number of steps whatever k, so more families means more diverse data, not
more training. Fine-tuning validates once, at its last epoch: in a few-shot run validation and test
are the same ten trajectories, so choosing the checkpoint on validation would choose it on the test
set. Quick mode also runs, at k = 8, scratch and fine-tuning at lr 1e-3 (3x the protocol's) for
100 and for 300 steps (``sensitivity``). A run dir holding ``metrics.json`` is reused, so an interrupted
study resumes.

Writes ``results/<mode>.json``: ``heldout_{scratch,finetune,meta,lora}_rel_l2`` (lists over seeds,
at k = 8), the full table ``by_k[method][k]`` (lists over seeds), the pretraining runs' own test
errors, the acceptance checks, and ``results/<mode>_error_vs_families.png``.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
PRETRAIN_FAMILIES = ("advection", "heat", "kdv", "ks", "fisher_kpp", "allen_cahn", "wave", "klein_gordon")
HELD_OUT = "burgers"
METHODS = ("scratch", "finetune", "lora", "meta")
FINETUNE_EPOCHS = 100  # full batch of the ten shots: one step per epoch
MODES = {
    "quick": {"seeds": (0, 1, 2), "ks": (8, 4, 2, 1), "meta_ks": (8, 4, 2, 1),
              "pretrain": [], "meta": ["trainer.max_steps=500", "trainer.val_check_interval=250"],
              "finetune": ["optimizer.lr=3e-4"], "lora": ["optimizer.lr=3e-3", "model.task.lora_rank=4"],
              # the from-scratch baseline at other fine-tuning budgets (k = 8): is the gap only the lr?
              "sensitivity": {"lr1e-3": ["optimizer.lr=1e-3"],
                              "lr1e-3_300epochs": ["optimizer.lr=1e-3", "trainer.max_epochs=300",
                                                   "trainer.check_val_every_n_epoch=300"]}},
    "full": {"seeds": (0, 1, 2), "ks": (8, 4, 2, 1), "meta_ks": (8, 4, 2, 1),
             "pretrain": ["data.name=multi1d_full", "data.resolution=128", "data.generator.n_frames=64",
                          "data.spec.t_out=63", "trainer.accelerator=auto", "trainer.max_steps=20000",
                          "trainer.val_check_interval=2000"],
             "meta": ["trainer.max_steps=5000", "trainer.val_check_interval=1000"],
             "finetune": ["optimizer.lr=3e-4"], "lora": ["optimizer.lr=3e-3", "model.task.lora_rank=4"]},
}


def families_override(k: int) -> str:
    return f"data.families=[{','.join(PRETRAIN_FAMILIES[:k])}]"


def train_once(run: Path, overrides: list[str]) -> dict:
    """``python train.py experiment=lemon_quick <overrides> run_dir=<run>`` unless ``run`` holds
    metrics already; returns its metrics."""
    from neuropde.run import compose_config, train

    if not (run / "metrics.json").exists():
        t0 = time.perf_counter()
        train(compose_config("train", ["experiment=lemon_quick", *overrides, f"run_dir={run}"]))
        print(f"{run.name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return json.loads((run / "metrics.json").read_text())


def finetune_overrides(cfg: dict, seed: int) -> list[str]:
    """Few-shot fine-tuning on ten trajectories of the first burgers operator of the training split."""
    return [*cfg["pretrain"], "stage=finetune", f"data.families=[{HELD_OUT}]", "data.n_shots=10",
            "data.shot_operator=0", "data.loader.batch_size=10", "scheduler=none", "trainer.max_steps=-1",
            f"trainer.max_epochs={FINETUNE_EPOCHS}", f"trainer.check_val_every_n_epoch={FINETUNE_EPOCHS}",
            "trainer.val_check_interval=1.0", f"seed={seed}"]


def summary(metrics: dict, run: Path) -> dict:
    return {"rel_l2": metrics["test/rel_l2"], "persistence": metrics.get("test/rel_l2_persistence"),
            "train_seconds": metrics.get("train_seconds"), "run_dir": str(run)}


def run_grid(mode: str, out: Path, seeds, ks, meta_ks) -> dict:
    cfg = MODES[mode]
    runs: dict = {"pretrain": {}, "meta_pretrain": {}, **{m: {} for m in METHODS}}
    for seed in seeds:
        run = out / f"scratch_seed{seed}"
        m = train_once(run, [*finetune_overrides(cfg, seed), *cfg["finetune"]])  # the fine-tuning lr too
        runs["scratch"].setdefault("any", {})[seed] = summary(m, run)
    for k in ks:
        for seed in seeds:
            pre = out / f"pretrain_k{k}_seed{seed}"
            m = train_once(pre, [*cfg["pretrain"], families_override(k), f"seed={seed}"])
            runs["pretrain"].setdefault(k, {})[seed] = summary(m, pre)
            for method, extra in (("finetune", cfg["finetune"]), ("lora", cfg["lora"])):
                run = out / f"{method}_k{k}_seed{seed}"
                m = train_once(run, [*finetune_overrides(cfg, seed), f"init_from={pre}", *extra])
                runs[method].setdefault(k, {})[seed] = summary(m, run)
            if k in meta_ks:
                meta = out / f"meta_pretrain_k{k}_seed{seed}"
                m = train_once(meta, [*cfg["pretrain"], "stage=meta", families_override(k), f"seed={seed}",
                                      *cfg["meta"]])
                runs["meta_pretrain"].setdefault(k, {})[seed] = summary(m, meta)
                run = out / f"meta_k{k}_seed{seed}"
                m = train_once(run, [*finetune_overrides(cfg, seed), f"init_from={meta}", *cfg["finetune"]])
                runs["meta"].setdefault(k, {})[seed] = summary(m, run)
    runs["sensitivity"] = {}
    top = max(ks)
    for name, extra in cfg.get("sensitivity", {}).items():
        for seed in seeds:
            for method in ("scratch", "finetune"):
                run = out / f"sensitivity_{name}_{method}_seed{seed}"
                init = [f"init_from={out / f'pretrain_k{top}_seed{seed}'}"] if method == "finetune" else []
                m = train_once(run, [*finetune_overrides(cfg, seed), *init, *extra])
                runs["sensitivity"].setdefault(name, {}).setdefault(method, {})[seed] = summary(m, run)
    return runs


def plot(by_k: dict, scratch: list[float], file: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in ("finetune", "lora", "meta"):
        ks = sorted(int(k) for k in by_k.get(method, {}))
        if not ks:
            continue
        values = [by_k[method][k] for k in ks]
        mean = [statistics.mean(v) for v in values]
        ax.errorbar(ks, mean, yerr=[[m - min(v) for m, v in zip(mean, values)],
                                    [max(v) - m for m, v in zip(mean, values)]],
                    marker="o", capsize=3, label=f"pretrain ({method})" if method != "meta" else "meta-learned")
    ax.axhline(statistics.mean(scratch), color="k", ls="--", label="from scratch")
    ax.set(xscale="log", yscale="log", xticks=[1, 2, 4, 8], xticklabels=["1", "2", "4", "8"],
           xlabel="pretraining families", ylabel=f"relative L2 on {HELD_OUT} (10 shots)",
           title="held-out family, mean and range over seeds")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.legend()
    fig.tight_layout()
    file.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(file, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--quick", action="store_true", help="CPU: experiment=lemon_quick, 3 seeds")
    g.add_argument("--full", action="store_true", help="GPU machine: 128 points, 64 frames, longer training")
    p.add_argument("--out", default=str(HERE / "runs"))
    p.add_argument("--seeds", nargs="*", type=int, help="subset of the mode's seeds")
    p.add_argument("--ks", nargs="*", type=int, help="numbers of pretraining families (default 8 4 2 1)")
    p.add_argument("--meta-k", nargs="*", type=int, help="k at which to meta-train (quick default: 8)")
    args = p.parse_args()
    mode = "quick" if args.quick else "full"
    cfg = MODES[mode]
    seeds = tuple(args.seeds) if args.seeds else cfg["seeds"]
    ks = tuple(args.ks) if args.ks else cfg["ks"]
    meta_ks = tuple(args.meta_k) if args.meta_k is not None else cfg["meta_ks"]
    t0 = time.perf_counter()
    runs = run_grid(mode, Path(args.out) / mode, seeds, ks, meta_ks)

    scratch = [runs["scratch"]["any"][s]["rel_l2"] for s in seeds]
    by_k = {m: {k: [by_seed[s]["rel_l2"] for s in seeds] for k, by_seed in runs[m].items()}
            for m in ("finetune", "lora", "meta")}
    by_k["scratch"] = {k: scratch for k in ks}
    top = max(ks)
    results = {"mode": mode, "held_out": HELD_OUT, "pretraining_families": list(PRETRAIN_FAMILIES),
               "shots": 10, "finetune_epochs": FINETUNE_EPOCHS, "seeds": list(seeds), "k_reported": top,
               "heldout_scratch_rel_l2": scratch}
    for m in ("finetune", "meta", "lora"):
        results[f"heldout_{m}_rel_l2"] = by_k[m].get(top)
    results["persistence_rel_l2"] = runs["scratch"]["any"][seeds[0]]["persistence"]
    results["by_k"] = {m: {str(k): v for k, v in sorted(t.items())} for m, t in by_k.items()}
    results["pretrain_test_rel_l2"] = {str(k): [r[s]["rel_l2"] for s in seeds] for k, r in runs["pretrain"].items()}
    # acceptance: pretrain + fine-tune (or meta) at most half the from-scratch error; error falls with k
    best = min((statistics.mean(v), m) for m in ("finetune", "meta") if (v := by_k[m].get(top)))
    results["acceptance"] = {
        "ratio_to_scratch": {m: statistics.mean(by_k[m][top]) / statistics.mean(scratch)
                             for m in ("finetune", "meta", "lora") if by_k[m].get(top)},
        "half_of_scratch": best[0] <= 0.5 * statistics.mean(scratch), "best_method": best[1]}
    for m in ("finetune", "meta", "lora"):  # mean over seeds at every k, k increasing
        means = [statistics.mean(by_k[m][k]) for k in sorted(by_k[m])]
        results["acceptance"][f"{m}_mean_by_k"] = dict(zip((str(k) for k in sorted(by_k[m])), means))
        results["acceptance"][f"{m}_falls_with_families"] = (len(means) > 1 and
                                                            all(a >= b for a, b in zip(means, means[1:])))
    results["sensitivity"] = {name: {m: [r[s]["rel_l2"] for s in seeds] for m, r in by_method.items()}
                              for name, by_method in runs["sensitivity"].items()}
    results.update({"runs": {m: {str(k): v for k, v in r.items()} for m, r in runs.items()},
                    "wall_seconds": round(time.perf_counter() - t0, 1),
                    "machine": {"device": torch.cuda.get_device_name() if torch.cuda.is_available()
                                else platform.processor() or "cpu", "threads": torch.get_num_threads(),
                                "torch": torch.__version__, "python": platform.python_version()}})
    from neuropde.data.store import atomic_write_json

    (HERE / "results").mkdir(exist_ok=True)
    atomic_write_json(HERE / "results" / f"{mode}.json", results)
    plot(by_k, scratch, HERE / "results" / f"{mode}_error_vs_families.png")
    print(f"held-out {HELD_OUT}, 10 shots, relative L2 (persistence {results['persistence_rel_l2']:.4f})")
    print(f"{'method':10s}" + "".join(f"   k={k:<10d}" for k in sorted(ks)))
    for m in ("scratch", "finetune", "lora", "meta"):
        cells = [f"{statistics.mean(by_k[m][k]):.4f}±{statistics.pstdev(by_k[m][k]):.4f}" if k in by_k[m]
                 else "       -      " for k in sorted(ks)]
        print(f"{m:10s}" + "".join(f"  {c:12s}" for c in cells))
    for name, by_method in results["sensitivity"].items():
        print(f"k={top}, fine-tuning {name}: " + ", ".join(f"{m} {statistics.mean(v):.4f}" for m, v in by_method.items()))
    print("acceptance:", json.dumps(results["acceptance"]))


if __name__ == "__main__":
    main()
