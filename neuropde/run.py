"""train(cfg) / predict(cfg) / generate(cfg): plain functions behind the thin Hydra scripts.

Each returns its metrics as a dict and writes into its run directory (the Hydra run dir, or
``cfg.run_dir`` when called without Hydra): ``config.yaml``, ``metrics.json``, checkpoints,
logs and plots.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from neuropde import CONF_DIR, __version__, checkpoint
from neuropde.callbacks.build import check_packages
from neuropde.checks import (check_compatible, check_network_builds, check_resolution, check_same_fields,
                             compile_mode, datasets_of_kind, describe_data, settle_optimizer_options)
from neuropde.configs import compose_config, data_root, hydra_choices, predict_shorthands, run_dir, to_dict
from neuropde.cpu_memory import keep_freed_memory
from neuropde.data.generators import ensure_generated
from neuropde.data.store import SPLITS, atomic_write_json
from neuropde.errors import UserError
from neuropde.resume import STEERING, auto_resume, name_parts, resume_config

# the functions scripts, notebooks and tests import from here, wherever they live
__all__ = ["train", "predict", "generate", "compose_config", "predict_shorthands", "run_dir", "data_root",
           "hydra_choices", "to_dict", "build_datamodule", "build_task", "build_trainer", "trainer_arguments",
           "check_compatible", "check_network_builds", "check_resolution", "check_same_fields", "compile_mode",
           "datasets_of_kind", "describe_data", "settle_optimizer_options", "STEERING", "auto_resume",
           "name_parts", "resume_config", "route_lightning_logging", "cpu_hint", "write_config"]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------- helpers
def route_lightning_logging() -> None:
    """Send Lightning's messages through the root logger only.

    Lightning gives its package logger a stderr handler of its own; under the scripts' logging
    (``conf/hydra/job_logging/neuropde.yaml``: console and the run's log file on the root logger)
    every message then printed twice and missed the log file's format. Its advertisements for
    its cloud services ("💡 Tip: …", on every run) are dropped, and so is a deprecation warning
    that Lightning 2.6 raises against newer torch on every run (nothing a user can act on).
    Called by the scripts.
    """
    import warnings

    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
            logger.removeHandler(handler)
        logger.propagate = True
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NoTips) for f in rank_zero.filters):
        rank_zero.addFilter(_NoTips())


class _NoTips(logging.Filter):
    """Drops Lightning's "💡 Tip: …" records (advertisements, printed by every Trainer)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def build_datamodule(cfg: DictConfig, progress: bool = True):
    """The Lightning data module of ``cfg.data``: the class ``data._target_`` names, or the one the
    task asks for (:meth:`BaseTask.make_datamodule`, e.g. snapshots for an auto-decoder)."""
    from neuropde.plugins import import_target

    task_class = import_target(cfg.model.task.get("_target_"), "model.task._target_")
    return task_class.make_datamodule(cfg, data_root(cfg), progress=progress)


def build_task(cfg: DictConfig, stats: dict | None):
    """Instantiate the network and its task from the (resolved) config."""
    from hydra.errors import InstantiationException

    try:
        net = instantiate(cfg.model.net, _convert_="all")
        return instantiate(cfg.model.task, net=net, optimizer=to_dict(cfg.optimizer),
                           scheduler=to_dict(cfg.scheduler) if cfg.get("scheduler") else None,
                           stats=stats, _convert_="all", _recursive_=False)
    except InstantiationException as err:  # Hydra wraps our messages: show the user the message itself
        if isinstance(err.__cause__, UserError):
            raise err.__cause__ from None
        raise


def write_config(cfg: DictConfig, directory: Path) -> None:
    tmp = directory / "config.yaml.tmp"
    tmp.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    os.replace(tmp, directory / "config.yaml")


def _metrics(values: dict) -> dict:
    return {k: (float(v) if isinstance(v, (int, float, torch.Tensor)) else v) for k, v in values.items()}


# ----------------------------------------------------------------------------------------- train
def trainer_arguments(cfg: DictConfig) -> dict:
    """``cfg.trainer`` as ``lightning.Trainer`` keyword arguments, checked first: an unknown option
    or a number that is not one (``trainer.max_epochs=abc``) would otherwise surface epochs later
    as a TypeError naming neither."""
    import inspect
    import typing

    args = to_dict(cfg.trainer)
    unknown = sorted(set(args) - set(inspect.signature(L.Trainer.__init__).parameters))
    if unknown:
        raise UserError(f"lightning.Trainer has no option {', '.join(unknown)}: remove trainer.{unknown[0]}")
    try:
        hints = typing.get_type_hints(L.Trainer.__init__)
    except Exception:  # an annotation this Python cannot resolve: leave the checks to Lightning
        hints = {}
    for key, value in args.items():
        allowed = set(typing.get_args(hints[key]) or (hints[key],)) if key in hints else set()
        if not allowed or not allowed <= {int, float, type(None)}:
            continue  # not a plain number option (devices, precision, strategy, ...)
        ok = (value is None and type(None) in allowed) or (
            isinstance(value, (int, float)) and not isinstance(value, bool)
            and (float in allowed or isinstance(value, int)))
        if not ok:
            want = ("a number" if float in allowed else "an integer") + (" or null" if type(None) in allowed else "")
            raise UserError(f"trainer.{key} must be {want}, got {value!r}")
    return args


def build_trainer(cfg: DictConfig, out: Path) -> L.Trainer:
    """The Lightning trainer with the logger and callbacks of the ``logger`` and ``callbacks`` groups
    (``cfg.monitor`` reaches the checkpoint and early stopping through ``${monitor}`` in their configs)."""
    from neuropde.callbacks.build import build_logger_and_callbacks

    logger, callbacks = build_logger_and_callbacks(cfg, out)
    return L.Trainer(**trainer_arguments(cfg), callbacks=callbacks, logger=logger, default_root_dir=out)


def write_param_groups(cfg: DictConfig, task, file: Path) -> None:
    """Which update rule the configured optimizer applies to each parameter (built once here and
    discarded: Lightning builds its own; learning rates do not matter for the table)."""
    from neuropde.optim import build_optimizer
    from neuropde.optim.grouping import describe_optimizer

    name = hydra_choices().get("optimizer", cfg.optimizer.get("_target_"))
    table = describe_optimizer(task, build_optimizer({**to_dict(cfg.optimizer), "batch_scaling": "none"}, task))
    file.write_text(f"update rule of every trainable parameter under optimizer={name}\n\n{table}\n")


def compile_network(task, mode) -> None:
    """``compile=``: torch.compile the task's network in place (its state_dict keys do not change,
    so checkpoints stay interchangeable with uncompiled runs). Compilation happens at the first
    step; ``experiments/bench`` measures where it pays off."""
    if compile_mode(mode) is not None:
        task.net.compile(mode=compile_mode(mode))
        log.info("network compiled with torch.compile (mode %s) at its first step", compile_mode(mode))


def cpu_hint(cfg: DictConfig) -> None:
    """Without CUDA, a GPU-sized data set that is not on disk yet (its config's ``cpu_hint`` says
    what making it costs) gets one warning line with that cost and the CPU-sized command of this
    model (``experiment=<family>_quick``) before the run goes on as asked: a new user on a laptop
    would otherwise watch a progress bar with an ETA of hours and learn nothing else."""
    hint = cfg.data.get("cpu_hint")
    if not hint or torch.cuda.is_available() or "generator" not in cfg.data:
        return
    from neuropde.data.generators import data_store

    store = data_store(to_dict(cfg.data), data_root(cfg))
    if all(store.is_complete(split, verify=False) for split in SPLITS):
        return
    quick = f"{cfg.model.family}_quick"
    command = (f"python train.py experiment={quick}" if (CONF_DIR / "experiment" / f"{quick}.yaml").exists()
               else "python train.py experiment=<family>_quick (conf/experiment/)")
    log.warning("no CUDA device: %s. A CPU-sized run (minutes): %s. Going on as asked.", hint, command)


def train(cfg: DictConfig) -> dict:
    """Train ``cfg.model`` on ``cfg.data``; test the best checkpoint; return the metrics.

    ``resume=auto`` makes the same command safe to repeat (a preempted job, a sweep rerun into
    the same ``hydra.sweep.dir``): a finished run returns its metrics, a cut one continues from
    its ``last.ckpt``, a new one starts.
    """
    keep_freed_memory()  # large CPU buffers are reused, not re-faulted every step
    if cfg.get("resume") and cfg.get("init_from"):
        raise UserError("resume= continues a run and init_from= starts a new one from weights: give only one")
    if cfg.get("resume") and str(cfg.resume) != "auto":
        cfg = resume_config(cfg)  # the checkpoint's own config and run dir, before anything is made
    out = run_dir(cfg)
    describe_data(cfg)  # the user's files (data=file/well/pdebench): read their metadata, refuse bad ones
    check_compatible(cfg)
    check_resolution(cfg)
    trainer_arguments(cfg)  # a typo in trainer.* is reported now, not after data and model are built
    settle_optimizer_options(cfg)  # and an option of another optimizer rule
    check_packages(cfg)  # so is a logger or callback whose package is not installed
    resume = None
    if str(cfg.get("resume")) == "auto":
        resume, finished = auto_resume(cfg, out)
        if finished is not None:
            log.info("resume=auto: the run in %s has finished (test/rel_l2 %.4g); nothing to do", out,
                     finished.get("test/rel_l2", float("nan")))
            return finished
        log.info("resume=auto: %s", f"continuing from {resume}" if resume else "nothing to continue, a new run")
        if resume:
            checkpoint.read(resume)  # a clear error now rather than deep inside Lightning
    elif cfg.get("resume"):
        resume = str(cfg.resume)  # resolved by resume_config
    if cfg.get("init_from"):
        checkpoint.read(cfg.init_from)  # missing or corrupt: said now, not after the data are made
    check_network_builds(cfg)
    compile_mode(cfg.get("compile", False))
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    write_config(cfg, out)
    cpu_hint(cfg)  # before a GPU-sized data set is generated on a CPU

    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    task = build_task(cfg, dm.stats)
    task.meta = {"config": to_dict(cfg), "choices": hydra_choices(), "version": __version__,
                 "stats": dm.stats}
    if cfg.get("init_from"):
        checkpoint.load_weights(task, cfg.init_from)
    task.configure_model()  # Lightning's hook, called early (idempotent) so that adapters (LoRA) are in place
    write_param_groups(cfg, task, out / "param_groups.txt")  # before the update rules are listed and counted
    n_params = sum(p.numel() * (2 if p.is_complex() else 1) for p in task.net.parameters())
    log.info("model %s: %s real parameters; run dir %s", cfg.model.family, f"{n_params:,}", out)
    compile_network(task, cfg.get("compile", False))

    trainer = build_trainer(cfg, out)
    trainer.fit(task, datamodule=dm, ckpt_path=resume)
    metrics = {k: v for k, v in _metrics(trainer.callback_metrics).items() if k.startswith("val/")}
    best = trainer.checkpoint_callback.best_model_path or None
    tested = trainer.test(task, datamodule=dm, ckpt_path=best, verbose=False)
    metrics.update(_metrics(tested[0] if tested else {}))
    timer = next(cb for cb in trainer.callbacks if type(cb).__name__ == "EpochTimer")
    metrics.update({"params": n_params, "epochs": trainer.current_epoch, "best_ckpt": best,
                    "sec_per_epoch": timer.median,
                    "train_seconds": sum(timer.seconds)})  # epochs run by this process (not before a resume)
    if trainer.is_global_zero:
        atomic_write_json(out / "metrics.json", metrics)
        baseline = metrics.get("test/rel_l2_persistence")
        log.info("test/rel_l2 %.4g%s; metrics in %s", metrics.get("test/rel_l2", float("nan")),
                 "" if baseline is None else f" (persistence {baseline:.4g})", out / "metrics.json")
    return metrics


# --------------------------------------------------------------------------------------- predict


def predict_config(cfg: DictConfig, ckpt: dict) -> DictConfig:
    """The checkpoint's config, with the data swapped (``data=``) or edited (``data.key=``)."""
    stored = OmegaConf.create(ckpt["neuropde"]["config"])
    name_parts(stored)
    data = cfg.get("data")
    if data:
        data = to_dict(data)
        merged = data if "equation" in data else OmegaConf.merge(stored.data, data)
        OmegaConf.set_struct(stored, False)
        if "path" in data and data["path"] != stored.data.get("path") and "whole" in merged:
            merged["whole"] = True  # another file of the same layout: evaluate all of it, not its test split
        stored.data = merged
    if cfg.get("data_root"):
        stored.data_root = cfg.data_root
    stored.run_dir = str(run_dir(cfg))
    return stored


def predict(cfg: DictConfig) -> dict:
    """Run a checkpoint on a split; write ``predictions.h5``, ``metrics.json`` and plots.

    On Navier–Stokes data every trajectory also gets the residual-based error estimate; with
    ``refine.enabled`` an SFNO's output operator is fine-tuned per trajectory (Spectral-Refiner).
    """
    keep_freed_memory()  # large CPU buffers are reused, not re-faulted every step
    if OmegaConf.is_missing(cfg, "ckpt"):
        raise UserError("predict.py needs a checkpoint: ckpt=<run dir> (uses its checkpoints/best.ckpt) "
                        "or ckpt=<file>.ckpt")
    ckpt = checkpoint.read(cfg.ckpt)
    pcfg = predict_config(cfg, ckpt)
    out = Path(pcfg.run_dir)
    trained = OmegaConf.to_container(pcfg.data.spec, resolve=True)
    describe_data(pcfg)
    check_same_fields(trained, to_dict(pcfg.data.spec))
    write_config(pcfg, out)
    check_compatible(pcfg)
    split = cfg.get("split", "test")
    if split not in SPLITS:
        raise UserError(f"split={split} is not a split; choose one of {', '.join(SPLITS)}")
    dm = build_datamodule(pcfg)
    task = build_task(pcfg, ckpt["neuropde"].get("stats"))
    task.load_state_dict(ckpt["state_dict"])
    task.meta = dict(ckpt["neuropde"])  # config (as trained), choices, version, stats
    device = torch.device(cfg.get("device") or ("cuda" if torch.cuda.is_available() else "cpu"))
    task.to(device).eval()
    options = {k: v for k, v in to_dict(cfg).items() if k not in ("data", "hydra")}
    options["ckpt"] = str(checkpoint.resolve_path(cfg.ckpt))
    return task.predict_split(dm, split, out, options)


# -------------------------------------------------------------------------------------- generate
def generate(cfg: DictConfig) -> dict:
    """Generate (or complete) every split of ``cfg.data``; with ``export=well|pdebench`` also write
    it in that schema (into ``export_dir``); return where they are."""
    from neuropde.data.exporters import exporter

    keep_freed_memory()  # large CPU buffers are reused, not re-faulted every step
    data_cfg = to_dict(cfg.data)
    export = exporter(cfg.export, data_cfg) if cfg.get("export") else None  # refused before any work
    store = ensure_generated(data_cfg, data_root(cfg), splits=cfg.get("splits") or SPLITS)
    info = {"dir": str(store.dir), "files": {s: str(store.path(s)) for s in SPLITS if store.path(s).exists()}}
    log.info("data set %s ready in %s", cfg.data.name, store.dir)
    if export is not None:
        out = Path(cfg.get("export_dir") or data_root(cfg) / f"{cfg.data.name}_{cfg.export}")
        info["export"] = str(export(store.dir, data_cfg, out))
        log.info("exported %s as %s to %s", cfg.data.name, cfg.export, info["export"])
    print(json.dumps(info))
    return info
