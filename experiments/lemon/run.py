"""LeMON: does pretraining on more PDE families help learn a new family from ten trajectories?
(arXiv 2408.16168; README.md here).

    python experiments/lemon/run.py --quick   # CPU: experiment=lemon_quick, 3 seeds x 5 operators (~80 min on one core)
    python experiments/lemon/run.py --full    # GPU machine: 128 points, 64 frames, longer training
    python experiments/lemon/run.py --budgets # CPU: scratch vs k = 8 fine-tuning over 100-3,000 steps, lr 3e-4 and 1e-3
    python experiments/lemon/run.py --smoke   # the --quick grid at test sizes (2 families, seconds), into --out or a temp dir

The held-out family is ``burgers`` (the last of ``data.generator.families``); the pretraining
families are the first k ∈ {1, 2, 4, 8} of the other eight, and separately a random k of them per
seed (``random_families``; quick: seeds 0-5, finetune and lora_all only). Methods, all with the
same backbone and the same fine-tuning budget, adapted to each of the first ``operators`` burgers
operators of the training split in turn (ten trajectories of ONE operator) and tested on that
operator's other ten initial conditions; a seed's figure is the mean over the operators:

- ``scratch``: the network trained from its initialisation on the ten trajectories (it does not
  depend on k: one run per seed and operator);
- ``finetune``: ``stage=pretrain`` on the k families, then every weight fine-tuned;
- ``lora``: the same pretrained network, rank-4 LoRA adapters on the ``nn.Linear`` layers only
  (with the FNO backbone: the operator encoder's) at a 10× larger learning rate;
- ``lora_all``: the same, adapters also on the FNO's 1×1 convolutions and spectral weights
  (``model.task.lora_targets``);
- ``meta``: ``stage=meta`` (first-order MAML over operators) on the k families, then the same
  fine-tuning as ``finetune`` (``--meta-k`` to run it at fewer k: it is the costliest pretraining).

Pretraining runs a fixed number of steps whatever k, so more families means more diverse data, not
more training. Fine-tuning validates once, at its last epoch: in a few-shot run validation and test
are the same ten trajectories, so choosing the checkpoint on validation would choose it on the test
set. Quick mode also runs, at k = 8, scratch and fine-tuning at lr 1e-3 (3x the protocol's) for
100 and for 300 steps (``sensitivity``), and the k = 8 pretrained (and meta-trained) networks
zero-shot on new operators within and outside the training coefficient spread (``zeroshot``). A
run dir holding ``metrics.json`` is reused, so an interrupted study resumes.

Budgets (``--budgets``, quick sizes): scratch and fine-tuning from the k = 8 pretrained network
(the same ``pretrain_k8_seed<s>`` runs as the grid) at constant lr 3e-4 and 1e-3, on the same 5
burgers operators, each trained once for the largest budget (``BUDGET_TOP``: 3,000 full-batch steps
at 1e-3, 1,000 at 3e-4) and evaluated
every 100 steps: with a constant lr and a full batch of the ten shots, the network after b steps of
that run is the network a b-step run ends with (``consistency`` in the results checks it against
separate 100-step runs), and the evaluation samples are the test samples (see above), so the
error at b is the test error of a b-step fine-tuning, no checkpoint chosen. Writes
``results/budgets.json`` (``curve[method][lr][budget]``: lists over seeds of the mean over
operators) and ``results/budgets.png``.

Writes ``results/<mode>.json``: ``heldout_{scratch,finetune,meta,lora,lora_all}_rel_l2`` (lists
over seeds, at k = 8), the full table ``by_k[method][k]`` (lists over seeds; per operator in
``by_k_per_operator``), ``random_subsets``, ``zeroshot_rel_l2`` / ``zeroshot_by_family``, the
pretraining runs' own test errors, the acceptance checks, and ``results/<mode>_error_vs_families.png``.
"""
from __future__ import annotations

import argparse
import sys
import json
import platform
import statistics
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE.parent))  # experiments/: study.py
from study import study_dirs  # noqa: E402
PRETRAIN_FAMILIES = ("advection", "heat", "kdv", "ks", "fisher_kpp", "allen_cahn", "wave", "klein_gordon")
HELD_OUT = "burgers"
METHODS = ("scratch", "finetune", "lora", "lora_all", "meta")
ADAPTED = METHODS[1:]  # the methods that start from a pretrained network
FINETUNE_EPOCHS = 100  # full batch of the ten shots: one step per epoch
MODES = {
    "quick": {"seeds": (0, 1, 2), "ks": (8, 4, 2, 1), "meta_ks": (8, 4, 2, 1),
              "pretrain": [], "meta": ["trainer.max_steps=500", "trainer.val_check_interval=250"],
              "finetune": ["optimizer.lr=3e-4"], "lora": ["optimizer.lr=3e-3", "model.task.lora_rank=4"],
              "lora_all": ["optimizer.lr=3e-3", "model.task.lora_rank=4",
                           "model.task.lora_targets=[linear,conv1x1,spectral]"],
              "operators": 5, "random_subsets": (0, 1, 2, 3, 4, 5),  # seeds: one random subset each
              # zero-shot: 4 new operators per pretraining family within the training spread (±10 %)
              # and outside it (±30 %), a data seed no training set used
              "zeroshot": {"id": ["data.name=multi1d_quick_zs_id", "data.seed=2", "data.samples.test=720"],
                           "ood": ["data.name=multi1d_quick_zs_ood", "data.seed=2", "data.samples.test=720",
                                   "data.generator.spread=0.3"]},
              # the from-scratch baseline at other fine-tuning budgets (k = 8): is the gap only the lr?
              "sensitivity": {"lr1e-3": ["optimizer.lr=1e-3"],
                              "lr1e-3_300epochs": ["optimizer.lr=1e-3", "trainer.max_epochs=300",
                                                   "trainer.check_val_every_n_epoch=300"]}},
    "full": {"seeds": (0, 1, 2), "ks": (8, 4, 2, 1), "meta_ks": (8, 4, 2, 1),
             "pretrain": ["data.name=multi1d_full", "data.resolution=128", "data.generator.n_frames=64",
                          "data.spec.t_out=63", "trainer.accelerator=auto", "trainer.max_steps=20000",
                          "trainer.val_check_interval=2000"],
             "meta": ["trainer.max_steps=5000", "trainer.val_check_interval=1000"],
             "finetune": ["optimizer.lr=3e-4"], "lora": ["optimizer.lr=3e-3", "model.task.lora_rank=4"],
             "lora_all": ["optimizer.lr=3e-3", "model.task.lora_rank=4",
                          "model.task.lora_targets=[linear,conv1x1,spectral]"],
             "operators": 10,
             "zeroshot": {"id": ["data.name=multi1d_full_zs_id", "data.seed=2", "data.samples.test=1440"],
                          "ood": ["data.name=multi1d_full_zs_ood", "data.seed=2", "data.samples.test=1440",
                                  "data.generator.spread=0.3"]}},
}
# --smoke: every method and step of the quick grid at test sizes: two pretraining families (SMOKE_FAMILIES),
# k = 2 and 1, one seed, one held-out operator, a few steps each
SMOKE_FAMILIES = ("advection", "heat")
MODES["smoke"] = {
    **MODES["quick"], "seeds": (0,), "ks": (2, 1), "meta_ks": (2,), "operators": 1, "random_subsets": (0,),
    "finetune_epochs": 2,
    "pretrain": ["data.name=multi1d_smoke", "data.resolution=32", "data.generator.families=[advection,heat,burgers]",
                 "data.generator.n_frames=8", "data.spec.t_out=7", "data.samples.train=120", "data.samples.val=60",
                 "data.samples.test=60", "data.generator.shard_size=60", "data.loader.batch_size=16",
                 "data.loader.n_context=2", "model.net.fno_modes=8", "model.net.fno_width=8", "model.net.fno_layers=2",
                 "model.meta_tasks.n_tasks=2", "model.meta_tasks.n_support=3", "model.meta_tasks.n_query=3",
                 "trainer.max_steps=4", "trainer.val_check_interval=2", "logger=csv"],
    "meta": ["trainer.max_steps=2", "trainer.val_check_interval=2"],
    "zeroshot": {"id": ["data.name=multi1d_smoke_zs_id", "data.seed=2", "data.samples.test=60"],
                 "ood": ["data.name=multi1d_smoke_zs_ood", "data.seed=2", "data.samples.test=60",
                         "data.generator.spread=0.3"]},
    "sensitivity": {"lr1e-3": ["optimizer.lr=1e-3"],
                    "lr1e-3_300epochs": ["optimizer.lr=1e-3", "trainer.max_epochs=3", "trainer.check_val_every_n_epoch=3"]}}


def families_override(k: int) -> str:
    return f"data.families=[{','.join(PRETRAIN_FAMILIES[:k])}]"


def random_families(k: int, seed: int) -> list[str]:
    """k of the eight pretraining families drawn at random (seeded by k and the seed, so every seed
    sees another subset): with the families always taken in one order, "more families" and "these
    families" are confounded."""
    import random

    return sorted(random.Random(1000 * k + seed).sample(PRETRAIN_FAMILIES, k), key=PRETRAIN_FAMILIES.index)


def train_once(run: Path, overrides: list[str]) -> dict:
    """``python train.py experiment=lemon_quick <overrides> run_dir=<run>`` unless ``run`` holds
    metrics already; returns its metrics."""
    from neuropde.run import compose_config, train

    if not (run / "metrics.json").exists():
        t0 = time.perf_counter()
        train(compose_config("train", ["experiment=lemon_quick", *overrides, f"run_dir={run}"]))
        print(f"{run.name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return json.loads((run / "metrics.json").read_text())


def finetune_overrides(cfg: dict, seed: int, operator: int = 0) -> list[str]:
    """Few-shot fine-tuning on ten trajectories of the ``operator``-th burgers operator of the
    training split, tested on its other ten."""
    epochs = cfg.get("finetune_epochs", FINETUNE_EPOCHS)
    return [*cfg["pretrain"], "stage=finetune", f"data.families=[{HELD_OUT}]", "data.n_shots=10",
            f"data.shot_operator={operator}", "data.loader.batch_size=10", "scheduler=none", "trainer.max_steps=-1",
            f"trainer.max_epochs={epochs}", f"trainer.check_val_every_n_epoch={epochs}",
            "trainer.val_check_interval=1.0", f"seed={seed}"]


def summary(metrics: dict, run: Path) -> dict:
    return {"rel_l2": metrics["test/rel_l2"], "persistence": metrics.get("test/rel_l2_persistence"),
            "train_seconds": metrics.get("train_seconds"), "run_dir": str(run)}


def adapt(out: Path, name: str, overrides: list[str], cfg: dict, seed: int, operators: int) -> dict:
    """Fine-tune on the ten shots of each of the first ``operators`` held-out operators, one run
    each (dir ``<name>`` for operator 0, as the first study; ``<name>_op<j>`` after it); the
    seed's figure is the mean over operators."""
    per_op = []
    for j in range(operators):
        run = out / (name if j == 0 else f"{name}_op{j}")
        per_op.append(summary(train_once(run, [*finetune_overrides(cfg, seed, j), *overrides]), run))
    return {"rel_l2": statistics.mean(r["rel_l2"] for r in per_op),
            "persistence": statistics.mean(r["persistence"] for r in per_op if r["persistence"] is not None),
            "per_operator": [r["rel_l2"] for r in per_op], "run_dirs": [r["run_dir"] for r in per_op]}


def zero_shot(out: Path, ckpt: Path, split_name: str, overrides: list[str]) -> dict:
    """``predict.py`` of a pretrained run on new operators of its own families (no adaptation: the
    operator is known only through the context examples); errors overall and per family."""
    from neuropde.run import compose_config, predict

    run = out / f"zeroshot_{split_name}_{ckpt.name}"
    if not (run / "metrics.json").exists():
        predict(compose_config("predict", [f"ckpt={ckpt}", *overrides, f"run_dir={run}", "n_plots=0"]))
    m = json.loads((run / "metrics.json").read_text())
    return {"rel_l2": m["test/rel_l2"], "by_family": m["test/rel_l2_by_family"], "samples": m["samples"]}


def run_grid(mode: str, out: Path, seeds, ks, meta_ks, operators: int) -> dict:
    cfg = MODES[mode]
    runs: dict = {"pretrain": {}, "meta_pretrain": {}, "zeroshot": {}, **{m: {} for m in METHODS}}
    for seed in seeds:
        runs["scratch"].setdefault("any", {})[seed] = adapt(out, f"scratch_seed{seed}", cfg["finetune"], cfg,
                                                           seed, operators)  # the fine-tuning lr too
    for k in ks:
        for seed in seeds:
            pre = out / f"pretrain_k{k}_seed{seed}"
            m = train_once(pre, [*cfg["pretrain"], families_override(k), f"seed={seed}"])
            runs["pretrain"].setdefault(k, {})[seed] = summary(m, pre)
            for method in ("finetune", "lora", "lora_all"):
                extra = cfg[method]
                runs[method].setdefault(k, {})[seed] = adapt(out, f"{method}_k{k}_seed{seed}",
                                                             [f"init_from={pre}", *extra], cfg, seed, operators)
            if k in meta_ks:
                meta = out / f"meta_pretrain_k{k}_seed{seed}"
                m = train_once(meta, [*cfg["pretrain"], "stage=meta", families_override(k), f"seed={seed}",
                                      *cfg["meta"]])
                runs["meta_pretrain"].setdefault(k, {})[seed] = summary(m, meta)
                runs["meta"].setdefault(k, {})[seed] = adapt(out, f"meta_k{k}_seed{seed}",
                                                             [f"init_from={meta}", *cfg["finetune"]], cfg, seed,
                                                             operators)
    top = max(ks)
    # the same with a random subset of k families per seed (fine-tuning and all-layer LoRA only)
    runs["random_subsets"] = {"families": {}, "finetune": {}, "lora_all": {}}
    random_seeds = tuple(cfg.get("random_subsets") or ())
    for k in (ks if random_seeds else ()):
        for seed in random_seeds:
            fams = list(PRETRAIN_FAMILIES) if k == len(PRETRAIN_FAMILIES) else random_families(k, seed)
            pre = out / (f"pretrain_k{k}_seed{seed}" if k == len(PRETRAIN_FAMILIES) else f"pretrain_rk{k}_seed{seed}")
            train_once(pre, [*cfg["pretrain"], f"data.families=[{','.join(fams)}]", f"seed={seed}"])
            runs["random_subsets"]["families"].setdefault(k, {})[seed] = fams
            for method in ("finetune", "lora_all"):
                name = f"{method}_k{k}_seed{seed}" if k == len(PRETRAIN_FAMILIES) else f"{method}_rk{k}_seed{seed}"
                runs["random_subsets"][method].setdefault(k, {})[seed] = adapt(
                    out, name, [f"init_from={pre}", *cfg[method]], cfg, seed, operators)
    for seed in seeds:  # zero-shot on unseen coefficients of the pretraining families, k = top
        for split_name, overrides in cfg.get("zeroshot", {}).items():
            for kind in ("pretrain", "meta_pretrain"):
                ckpt = out / f"{kind}_k{top}_seed{seed}"
                if ckpt.exists():
                    runs["zeroshot"].setdefault(split_name, {}).setdefault(kind, {})[seed] = \
                        zero_shot(out, ckpt, split_name, overrides)
    runs["sensitivity"] = {}
    for name, extra in cfg.get("sensitivity", {}).items():
        for seed in seeds:
            for method in ("scratch", "finetune"):
                init = [f"init_from={out / f'pretrain_k{top}_seed{seed}'}"] if method == "finetune" else []
                runs["sensitivity"].setdefault(name, {}).setdefault(method, {})[seed] = adapt(
                    out, f"sensitivity_{name}_{method}_seed{seed}", [*init, *extra], cfg, seed, operators)
    return runs


BUDGETS = (100, 300, 1000, 3000)
BUDGET_LRS = ("3e-4", "1e-3")
# the longest run per lr (CPU time): at 1e-3 scratch has stopped improving by 1,000-3,000 steps
BUDGET_TOP = {"1e-3": 3000, "3e-4": 1000}


def val_curve(run: Path) -> dict[int, float]:
    """``{steps: val/rel_l2}`` from a run's CSV log (one full-batch step per epoch)."""
    import csv

    rows = csv.DictReader(open(run / "logs" / "metrics.csv"))
    return {int(r["epoch"]) + 1: float(r["val/rel_l2"]) for r in rows if r.get("val/rel_l2")}


def budget_study(out: Path, seeds, lrs, operators: int, top: dict | None = None,
                 methods=("scratch", "finetune")) -> None:
    """Train scratch and k = 8 fine-tuning for ``top[lr]`` steps (default ``BUDGET_TOP``), one run per
    seed, method, lr and operator, evaluated every 100 steps; :func:`collect_budgets` reads them."""
    cfg = MODES["quick"]
    top = {lr: (top or BUDGET_TOP).get(lr, max(BUDGETS)) for lr in lrs}
    for seed in seeds:
        pre = out / f"pretrain_k{len(PRETRAIN_FAMILIES)}_seed{seed}"
        train_once(pre, [*cfg["pretrain"], families_override(len(PRETRAIN_FAMILIES)), f"seed={seed}"])
        for lr in lrs:
            for method in methods:
                init = [f"init_from={pre}"] if method == "finetune" else []
                for j in range(operators):
                    longer = [r for r in out.glob(f"budget_{method}_lr{lr}_*steps_seed{seed}_op{j}")
                              if (r / "metrics.json").exists() and int(r.name.split("_")[3][:-5]) >= top[lr]]
                    if longer:  # a longer run holds this one (constant lr, full batch)
                        continue
                    train_once(out / f"budget_{method}_lr{lr}_{top[lr]}steps_seed{seed}_op{j}",
                               [*finetune_overrides(cfg, seed, j), *init, f"optimizer.lr={lr}",
                                f"trainer.max_epochs={top[lr]}", "trainer.check_val_every_n_epoch=100"])
    # consistency: a separate 100-step run (the protocol's length) against the long run at step 100
    seed, lr = seeds[0], lrs[0]
    for method in ("scratch", "finetune"):
        init = [f"init_from={out / f'pretrain_k{len(PRETRAIN_FAMILIES)}_seed{seed}'}"] if method == "finetune" else []
        train_once(out / f"budget_check_{method}_lr{lr}_seed{seed}_op0",
                   [*finetune_overrides(cfg, seed, 0), *init, f"optimizer.lr={lr}"])


def collect_budgets(out: Path, seeds, lrs, operators: int) -> dict:
    """The budget curves from the runs on disk: for every (method, lr, seed, operator) the longest
    finished run; a (seed, budget) cell counts when all ``operators`` reached that budget.

    ``curve[method][lr][budget]``: {seed: mean over operators}; ``ratio[lr][budget]``: mean finetune /
    mean scratch over the seeds that have both; ``ratio_per_seed`` the same seed by seed."""
    import re

    values: dict = {}
    for method in ("scratch", "finetune"):
        for lr in lrs:
            for seed in seeds:
                ops = []
                for j in range(operators):
                    runs = [(int(re.search(r"_(\d+)steps_", r.name).group(1)), r)
                            for r in out.glob(f"budget_{method}_lr{lr}_*steps_seed{seed}_op{j}")
                            if (r / "metrics.json").exists()]
                    if runs:
                        ops.append(val_curve(max(runs)[1]))
                if len(ops) < operators:
                    continue
                for b in sorted(set.intersection(*(set(c) for c in ops))):
                    values.setdefault(method, {}).setdefault(lr, {}).setdefault(str(b), {})[str(seed)] = \
                        statistics.mean(c[b] for c in ops)
    curve = {m: {lr: {str(b): v[str(b)] for b in BUDGETS if str(b) in v} for lr, v in by_lr.items()}
             for m, by_lr in values.items()}
    ratio, ratio_per_seed = {}, {}
    for lr in lrs:
        for b in BUDGETS:
            sc = curve.get("scratch", {}).get(lr, {}).get(str(b), {})
            ft = curve.get("finetune", {}).get(lr, {}).get(str(b), {})
            both = sorted(set(sc) & set(ft))
            if both:
                ratio.setdefault(lr, {})[str(b)] = (statistics.mean(ft[x] for x in both)
                                                   / statistics.mean(sc[x] for x in both))
                ratio_per_seed.setdefault(lr, {})[str(b)] = {x: ft[x] / sc[x] for x in both}
    consistency = {}
    for method in ("scratch", "finetune"):
        for lr in lrs:
            check = out / f"budget_check_{method}_lr{lr}_seed{seeds[0]}_op0"
            longs = [(int(re.search(r"_(\d+)steps_", r.name).group(1)), r)
                     for r in out.glob(f"budget_{method}_lr{lr}_*steps_seed{seeds[0]}_op0") if (r / "metrics.json").exists()]
            if (check / "metrics.json").exists() and longs:
                consistency[f"{method}_lr{lr}"] = {
                    "separate_100_step_run": json.loads((check / "metrics.json").read_text())["test/rel_l2"],
                    "long_run_at_100": val_curve(max(longs)[1])[100]}
    return {"budgets": list(BUDGETS), "lrs": list(lrs), "seeds": list(seeds), "operators": operators,
            "k": len(PRETRAIN_FAMILIES), "held_out": HELD_OUT, "shots": 10, "curve": curve, "ratio": ratio,
            "ratio_per_seed": ratio_per_seed, "consistency": consistency,
            "curve_every_100_steps": values}   # the same cells at every evaluation (every 100 steps)


def plot_budgets(res: dict, file: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, lr in enumerate(res["lrs"]):
        for method, ls in (("scratch", "--"), ("finetune", "-")):
            cells = res["curve_every_100_steps"].get(method, {}).get(lr, {})
            if not cells:
                continue
            b = sorted(int(x) for x in cells)
            v = [list(cells[str(x)].values()) for x in b]
            ax.plot(b, [statistics.mean(x) for x in v], ls=ls, color=f"C{i}", label=f"{method}, lr {lr}")
            ax.plot([x for x in b if x in BUDGETS], [statistics.mean(x) for bb, x in zip(b, v) if bb in BUDGETS],
                    ls="none", marker="o", color=f"C{i}")
    ax.set(xscale="log", yscale="log", xlabel="fine-tuning steps (full batch of 10 shots)",
           ylabel=f"relative L2 on {HELD_OUT}", title="held-out burgers: scratch vs pretrained (k = 8)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(file, dpi=110)
    plt.close(fig)


def plot(by_k: dict, scratch: list[float], file: Path, random_subsets: dict | None = None) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {m: f"C{i}" for i, m in enumerate(ADAPTED)}
    fig, ax = plt.subplots(figsize=(8, 4))
    for method in ADAPTED:
        ks = sorted(int(k) for k in by_k.get(method, {}))
        if not ks:
            continue
        values = [by_k[method][k] for k in ks]
        mean = [statistics.mean(v) for v in values]
        ax.errorbar(ks, mean, yerr=[[m - min(v) for m, v in zip(mean, values)],
                                    [max(v) - m for m, v in zip(mean, values)]],
                    marker="o", capsize=3, color=colors[method],
                    label=f"pretrain ({method})" if method != "meta" else "meta-learned")
    for method, values in (random_subsets or {}).items():  # {method: {k: [seeds]}}, a random subset per seed
        ks = sorted(int(k) for k in values)
        if ks:
            ax.plot(ks, [statistics.mean(values[str(k)]) for k in ks], ls=":", marker="s", color=colors[method],
                    label=f"pretrain ({method}), random families")
    ax.axhline(statistics.mean(scratch), color="k", ls="--", label="from scratch")
    ax.set(xscale="log", yscale="log", xticks=[1, 2, 4, 8], xticklabels=["1", "2", "4", "8"],
           xlabel="pretraining families", ylabel=f"relative L2 on {HELD_OUT} (10 shots)",
           title=f"held-out {HELD_OUT}: mean and range over seeds")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    file.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(file, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--quick", action="store_true", help="CPU: experiment=lemon_quick, 3 seeds")
    g.add_argument("--full", action="store_true", help="GPU machine: 128 points, 64 frames, longer training")
    g.add_argument("--budgets", action="store_true", help="CPU: scratch vs fine-tuning over fine-tuning budgets")
    g.add_argument("--smoke", action="store_true", help="the quick grid at test sizes (seconds), into --out or a temp dir")
    p.add_argument("--lrs", nargs="*", help=f"--budgets: learning rates (default {' '.join(BUDGET_LRS)})")
    p.add_argument("--max-budget", type=int, help="--budgets: longest run for every lr given (default 3000 at "
                   "1e-3, 1000 at 3e-4)")
    p.add_argument("--methods", nargs="*", choices=("scratch", "finetune"), help="--budgets: which to train")
    p.add_argument("--summary-only", action="store_true", help="--budgets: only summarise the runs on disk")
    p.add_argument("--no-summary", action="store_true", help="--budgets: train only (another process summarises)")
    p.add_argument("--out", default=None, help="where run dirs go (default: runs/ here)")
    p.add_argument("--seeds", nargs="*", type=int, help="subset of the mode's seeds")
    p.add_argument("--ks", nargs="*", type=int, help="numbers of pretraining families (default 8 4 2 1)")
    p.add_argument("--meta-k", nargs="*", type=int, help="k at which to meta-train (quick default: 8)")
    p.add_argument("--operators", type=int, help="held-out operators adapted to, one at a time (quick: 5)")
    args = p.parse_args(argv)
    if args.smoke:
        global PRETRAIN_FAMILIES
        PRETRAIN_FAMILIES = SMOKE_FAMILIES
    args.out, results_dir = study_dirs(HERE, "lemon", args.smoke, args.out)
    if args.budgets:
        seeds = tuple(args.seeds) if args.seeds else MODES["quick"]["seeds"]
        lrs = tuple(args.lrs) if args.lrs else BUDGET_LRS
        top = {lr: args.max_budget for lr in lrs} if args.max_budget else None
        out = Path(args.out) / "quick"
        operators = args.operators or MODES["quick"]["operators"]
        if not args.summary_only:
            budget_study(out, seeds, lrs, operators, top, tuple(args.methods or ("scratch", "finetune")))
        if args.no_summary:
            return
        from neuropde.data.store import atomic_write_json

        res = collect_budgets(out, seeds, lrs, operators)
        (HERE / "results").mkdir(exist_ok=True)
        atomic_write_json(HERE / "results" / "budgets.json", res)
        plot_budgets(res, HERE / "results" / "budgets.png")
        for lr in lrs:
            for method in ("scratch", "finetune"):
                cells = res["curve"].get(method, {}).get(lr, {})
                print(f"lr {lr} {method:8s} " + "  ".join(
                    f"{b}: {statistics.mean(v.values()):.4f} (n={len(v)})" for b, v in cells.items()))
            print(f"lr {lr} ratio    " + "  ".join(f"{b}: {r:.2f}" for b, r in res["ratio"].get(lr, {}).items()))
        print("consistency:", json.dumps(res["consistency"]))
        return
    mode = "quick" if args.quick else "smoke" if args.smoke else "full"
    cfg = MODES[mode]
    seeds = tuple(args.seeds) if args.seeds else cfg["seeds"]
    ks = tuple(args.ks) if args.ks else cfg["ks"]
    meta_ks = tuple(args.meta_k) if args.meta_k is not None else cfg["meta_ks"]
    t0 = time.perf_counter()
    operators = args.operators or cfg["operators"]
    runs = run_grid(mode, Path(args.out) / mode, seeds, ks, meta_ks, operators)

    scratch = [runs["scratch"]["any"][s]["rel_l2"] for s in seeds]
    by_k = {m: {k: [by_seed[s]["rel_l2"] for s in seeds] for k, by_seed in runs[m].items()}
            for m in ADAPTED}
    by_k["scratch"] = {k: scratch for k in ks}
    top = max(ks)
    results = {"mode": mode, "held_out": HELD_OUT, "pretraining_families": list(PRETRAIN_FAMILIES),
               "shots": 10, "heldout_operators": operators,
               "finetune_epochs": cfg.get("finetune_epochs", FINETUNE_EPOCHS), "seeds": list(seeds), "k_reported": top,
               "heldout_scratch_rel_l2": scratch}
    for m in ADAPTED:
        results[f"heldout_{m}_rel_l2"] = by_k[m].get(top)
    results["persistence_rel_l2"] = runs["scratch"]["any"][seeds[0]]["persistence"]
    results["by_k"] = {m: {str(k): v for k, v in sorted(t.items())} for m, t in by_k.items()}
    results["pretrain_test_rel_l2"] = {str(k): [r[s]["rel_l2"] for s in seeds] for k, r in runs["pretrain"].items()}
    # acceptance: pretrain + fine-tune (or meta) at most half the from-scratch error; error falls with k
    best = min((statistics.mean(v), m) for m in ("finetune", "meta") if (v := by_k[m].get(top)))
    results["acceptance"] = {
        "ratio_to_scratch": {m: statistics.mean(by_k[m][top]) / statistics.mean(scratch)
                             for m in ADAPTED if by_k[m].get(top)},
        "half_of_scratch": best[0] <= 0.5 * statistics.mean(scratch), "best_method": best[1]}
    for m in ADAPTED:  # mean over seeds at every k, k increasing
        means = [statistics.mean(by_k[m][k]) for k in sorted(by_k[m])]
        results["acceptance"][f"{m}_mean_by_k"] = dict(zip((str(k) for k in sorted(by_k[m])), means))
        results["acceptance"][f"{m}_falls_with_families"] = (len(means) > 1 and
                                                            all(a >= b for a, b in zip(means, means[1:])))
    results["by_k_per_operator"] = {m: {str(k): [by_seed[s]["per_operator"] for s in seeds]
                                        for k, by_seed in sorted(runs[m].items())} for m in ADAPTED}
    results["scratch_per_operator"] = [runs["scratch"]["any"][s]["per_operator"] for s in seeds]
    results["zeroshot_rel_l2"] = {split: {kind: [r[s]["rel_l2"] for s in seeds if s in r] for kind, r in by_kind.items()}
                                  for split, by_kind in runs["zeroshot"].items()}
    results["zeroshot_by_family"] = {split: {kind: {f: statistics.mean(r[s]["by_family"][f] for s in seeds if s in r)
                                                    for f in next(iter(r.values()))["by_family"]}
                                             for kind, r in by_kind.items()}
                                     for split, by_kind in runs["zeroshot"].items()}
    rs = runs["random_subsets"]
    results["random_subsets"] = {
        "families": {str(k): [v[s] for s in sorted(v)] for k, v in sorted(rs["families"].items())},
        **{m: {str(k): [v[s]["rel_l2"] for s in sorted(v)] for k, v in sorted(rs[m].items())} for m in ("finetune", "lora_all")}}
    results["random_subset_seeds"] = sorted(next(iter(rs["families"].values()), {}))
    for m in ("finetune", "lora_all"):
        means = [statistics.mean(v) for _, v in sorted((int(k), v) for k, v in results["random_subsets"][m].items())]
        results["acceptance"][f"random_subsets_{m}_mean_by_k"] = means
        results["acceptance"][f"random_subsets_{m}_falls_with_families"] = (
            len(means) > 1 and all(a >= b for a, b in zip(means, means[1:])))
    results["sensitivity"] = {name: {m: [r[s]["rel_l2"] for s in seeds] for m, r in by_method.items()}
                              for name, by_method in runs["sensitivity"].items()}
    results.update({"runs": {m: {str(k): v for k, v in r.items()} for m, r in runs.items()},
                    "wall_seconds": round(time.perf_counter() - t0, 1),
                    "machine": {"device": torch.cuda.get_device_name() if torch.cuda.is_available()
                                else platform.processor() or "cpu", "threads": torch.get_num_threads(),
                                "torch": torch.__version__, "python": platform.python_version()}})
    from neuropde.data.store import atomic_write_json

    results_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(results_dir / f"{mode}.json", results)
    plot(by_k, scratch, results_dir / f"{mode}_error_vs_families.png",
         {m: v for m, v in results["random_subsets"].items() if m != "families"})
    print(f"held-out {HELD_OUT}, 10 shots, relative L2 (persistence {results['persistence_rel_l2']:.4f})")
    print(f"{'method':10s}" + "".join(f"   k={k:<10d}" for k in sorted(ks)))
    for m in METHODS:
        cells = [f"{statistics.mean(by_k[m][k]):.4f}±{statistics.pstdev(by_k[m][k]):.4f}" if k in by_k[m]
                 else "       -      " for k in sorted(ks)]
        print(f"{m:10s}" + "".join(f"  {c:12s}" for c in cells))
    for name, by_method in results["sensitivity"].items():
        print(f"k={top}, fine-tuning {name}: " + ", ".join(f"{m} {statistics.mean(v):.4f}" for m, v in by_method.items()))
    for m in ("finetune", "lora_all"):
        if results["random_subsets"][m]:
            print(f"{m:10s} random subsets: " + "  ".join(f"k={k} {statistics.mean(v):.4f}"
                                                          for k, v in results["random_subsets"][m].items()))
    for split, by_kind in results["zeroshot_rel_l2"].items():
        print(f"zero-shot ({split}), k={top}: " + ", ".join(f"{kind} {statistics.mean(v):.4f}" for kind, v in by_kind.items()))
    print("acceptance:", json.dumps(results["acceptance"]))
    print(f"wrote {results_dir / f'{mode}.json'}")


if __name__ == "__main__":
    main()
