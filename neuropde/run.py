"""train(cfg) / predict(cfg) / generate(cfg): plain functions behind the thin Hydra scripts.

Each returns its metrics as a dict and writes into its run directory (the Hydra run dir, or
``cfg.run_dir`` when called without Hydra): ``config.yaml``, ``metrics.json``, checkpoints,
logs and plots.
"""
from __future__ import annotations

import json
from contextlib import nullcontext
import logging
import os
from pathlib import Path

import lightning as L
import torch
import yaml
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from neuropde import CONF_DIR, __version__, checkpoint
from neuropde.callbacks.build import check_packages
from neuropde.data.generators import ensure_generated
from neuropde.cpu_memory import keep_freed_memory
from neuropde.data.store import SPLITS, atomic_write_json
from neuropde.errors import UserError

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


def predict_shorthands(argv: list[str]) -> list[str]:
    """Rewrite the two shorthands of ``predict.py`` into plain Hydra overrides.

    - predict.yaml has no data node of its own (the checkpoint carries it), so without `data=<name>`
      an edit like `data.resolution=128` is appended to the empty node (`+data.resolution=128`).
    - `refine=true|false` means `refine.enabled=true|false` (`refine` is a config node of settings);
      the same for `assimilate=true|false`.
    """
    swap = any(a.startswith("data=") for a in argv)
    out = []
    for a in argv:
        if a.startswith("data.") and not swap:
            a = "+" + a
        elif a.lower() in ("refine=true", "refine=false", "assimilate=true", "assimilate=false"):
            name, value = a.split("=", 1)
            a = f"{name.lower()}.enabled={value.lower()}"
        out.append(a)
    return out


def compose_config(config: str, overrides: list[str] | None = None) -> DictConfig:
    """``conf/<config>.yaml`` with command-line style overrides, without the command line
    (experiment scripts, notebooks): ``train(compose_config("train", ["model=fno"]))``;
    ``predict`` configs take the same shorthands as ``predict.py``."""
    from hydra import compose, initialize_config_dir

    if config == "predict":
        overrides = predict_shorthands(list(overrides or []))
    from hydra.errors import MissingConfigException

    from hydra.core.global_hydra import GlobalHydra

    # inside a running Hydra app (train.py, predict.py) its search path is already set: compose in it
    context = nullcontext() if GlobalHydra.instance().is_initialized() else \
        initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3")
    with context:
        try:
            return compose(config_name=config, overrides=list(overrides or []))
        except MissingConfigException as err:  # an unknown group option: one line with the choices
            if not err.options:
                raise
            raise UserError(f"{err.missing_cfg_file.replace('/', '=', 1)} is not an option; choose one of "
                            f"{', '.join(err.options)}") from None


def run_dir(cfg: DictConfig) -> Path:
    from hydra.core.hydra_config import HydraConfig

    if cfg.get("run_dir"):
        d = Path(cfg.run_dir)
    elif HydraConfig.initialized():
        d = Path(HydraConfig.get().runtime.output_dir)
    else:
        d = Path("outputs/run")
    d.mkdir(parents=True, exist_ok=True)
    return d


def hydra_choices() -> dict:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    return {k: v for k, v in HydraConfig.get().runtime.choices.items() if not k.startswith("hydra")}


def data_root(cfg: DictConfig) -> Path:
    return Path(os.environ.get("NEUROPDE_DATASETS") or cfg.get("data_root") or "datasets")


def to_dict(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)


def _data_kind(name: str) -> str | None:
    """``spec.kind`` of ``conf/data/<name>.yaml``, following its defaults list (presets inherit it)."""
    path = CONF_DIR / "data" / f"{name}.yaml"
    if not path.exists():
        return None
    node = yaml.safe_load(path.read_text()) or {}
    if "kind" in node.get("spec", {}):
        return node["spec"]["kind"]
    parents = [d for d in node.get("defaults", []) if isinstance(d, str) and d != "_self_"]
    return next((k for k in map(_data_kind, parents) if k), None)


def datasets_of_kind(kinds) -> list[str]:
    """Names of ``conf/data/*.yaml`` whose ``spec.kind`` is one of ``kinds``."""
    return [f.stem for f in sorted((CONF_DIR / "data").glob("*.yaml")) if _data_kind(f.stem) in kinds]


def check_compatible(cfg: DictConfig) -> None:
    """Fail early, naming the data sets the model takes, when model and data don't fit."""
    kinds = list(cfg.model.get("data_kinds", []))
    kind = cfg.data.spec.kind
    if kinds and kind not in kinds:
        raise UserError(f"model={cfg.model.family} does not take data={cfg.data.name} (a {kind} data set); "
                        f"it takes: {', '.join(datasets_of_kind(kinds)) or kinds}")
    spec = cfg.data.spec
    if int(spec.get("in_channels", 1)) > 1 and not cfg.model.get("multichannel", False):
        fields = list(spec.get("channel_names") or []) + list(spec.get("constant_names") or [])
        raise UserError(f"model={cfg.model.family} takes one field per frame, and data={cfg.data.name} has "
                        f"{int(spec.in_channels)} ({', '.join(fields)}): pick one (data.keys=[name], or data.fields= "
                        "for The Well) or use a model that takes several (fno, lsm, mg_tfno)")


def check_resolution(cfg: DictConfig) -> None:
    """Refuse training a Fourier model on a grid too coarse for its modes: an axis of n points holds
    n // 2 + 1 Fourier modes, and weights for the others would never see data. (Predicting on a
    coarser grid than the training one is zero-shot evaluation, and allowed.)"""
    from neuropde.plugins import importable, import_target

    net = cfg.model.get("net") or {}
    target, grid = net.get("_target_"), cfg.data.spec.get("grid")
    if net.get("modes") is None or not grid or not importable(target):
        return
    points_needed = getattr(import_target(target, "model.net._target_"), "points_needed", None)
    if points_needed is None:  # a network that does not say how its modes map to grid points
        return
    modes, needed = list(net.modes), points_needed(list(net.modes))
    if any(p > n for p, n in zip(needed, grid)):
        raise UserError(f"model.net.modes {modes} needs at least {needed} grid points per axis and the data's grid is "
                        f"{list(grid)}: lower model.net.modes or give finer data")


def check_network_builds(cfg: DictConfig) -> None:
    """Build the network on the meta device (no memory, no arithmetic) so that a bad model option
    (``model.net.backend=foo``) is refused before any data are made; the real one is built after
    the data, from the training split's statistics. Networks that cannot be built on the meta
    device are checked when they are built for real."""
    from hydra.errors import InstantiationException

    try:
        with torch.device("meta"):
            instantiate(cfg.model.net, _convert_="all")
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        if isinstance(cause, ValueError):
            raise UserError(f"model.net: {cause}") from None
    except (UserError, ValueError) as err:
        raise UserError(f"model.net: {err}") from None
    except Exception as err:  # noqa: BLE001 - an operation the meta device lacks: checked for real later
        log.debug("network not checked on the meta device: %s", err)


def describe_data(cfg: DictConfig) -> None:
    """Fill in, in place, what a data module reads from the user's files (grid, fields, periodicity
    into ``data.spec``, ``data.resolution``) before the model is built: models size themselves from
    it, and a bad file is refused before any work. Data modules without ``describe`` are left alone."""
    from neuropde.plugins import import_target

    target = cfg.data.get("_target_")
    describe = getattr(import_target(target, "data._target_"), "describe", None) if target else None
    if describe is None:
        return
    facts = describe(to_dict(cfg.data))
    OmegaConf.set_struct(cfg, False)
    cfg.data = OmegaConf.merge(cfg.data, facts)


def settle_optimizer_options(cfg: DictConfig) -> None:
    """Drop from ``cfg.optimizer`` the options an experiment set for another rule than the chosen
    one (``experiment=sdgd_pinn_quick optimizer=adam``: Muon's ``ns_dtype``), each with a notice;
    refuse one typed on the command line (``optimizer=adam optimizer.ns_dtype=float32``). Before
    any data is made, so that a wrong option costs seconds."""
    from omegaconf import open_dict

    from neuropde.optim import drop_foreign_options

    typed = command_line_overrides()
    experiment = hydra_choices().get("experiment")
    origin = f"experiment={experiment}" if experiment else "the experiment or config, not the command line"
    with open_dict(cfg):
        for option in drop_foreign_options(to_dict(cfg.optimizer), typed, origin):
            del cfg.optimizer[option]


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


def compile_mode(mode) -> str | None:
    """torch.compile's mode for ``compile=`` (None: not compiled); an unknown value is refused."""
    modes = {False: None, None: None, True: "default", "false": None, "true": "default",
             "default": "default", "reduce-overhead": "reduce-overhead", "max-autotune": "max-autotune",
             "max-autotune-no-cudagraphs": "max-autotune-no-cudagraphs"}
    if mode not in modes:
        raise UserError(f"compile={mode} is not an option; choose false, true, reduce-overhead, max-autotune "
                        "or max-autotune-no-cudagraphs")
    return modes[mode]


def compile_network(task, mode) -> None:
    """``compile=``: torch.compile the task's network in place (its state_dict keys do not change,
    so checkpoints stay interchangeable with uncompiled runs). Compilation happens at the first
    step; ``experiments/bench`` measures where it pays off."""
    if compile_mode(mode) is not None:
        task.net.compile(mode=compile_mode(mode))
        log.info("network compiled with torch.compile (mode %s) at its first step", compile_mode(mode))


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def auto_resume(cfg: DictConfig, out: Path) -> tuple[str | None, dict | None]:
    """What ``resume=auto`` finds in the run dir ``out``: ``(None, metrics)`` when the run there
    finished (``metrics.json``), ``(last.ckpt, None)`` when it was cut short after an epoch, and
    ``(None, None)`` when there is nothing to continue. A run dir holding a run of another config
    is refused: continuing it under this one would mix the two."""
    stored = out / "config.yaml"
    if not stored.exists():
        return None, None
    # where logs go and which callbacks watch do not change what is trained
    old, new = (_flat({k: v for k, v in c.items() if k not in ("resume", "run_dir", "logger", "callbacks")})
                for c in (yaml.safe_load(stored.read_text()) or {}, to_dict(cfg)))
    # names a run dir of an older version did not store are not a difference: data._target_, the
    # data's cpu_hint, trainer options at Lightning's default (conf/trainer/default.yaml lists more now)
    import inspect

    lightning_default = {f"trainer.{k}": p.default for k, p in inspect.signature(L.Trainer.__init__).parameters.items()}

    def new_name(k: str) -> bool:
        return k not in old and (k.rsplit(".", 1)[-1] in ("_target_", "cpu_hint")
                                 or (k in lightning_default and new[k] == lightning_default[k]))

    differ = sorted(k for k in old.keys() | new.keys() if old.get(k, "<absent>") != new.get(k, "<absent>")
                    and not new_name(k))
    if differ:
        raise UserError(f"resume=auto: {out} holds a run of another config (differs in {', '.join(differ[:4])}"
                        f"{', …' if len(differ) > 4 else ''}); give another run dir, or resume=<checkpoint> "
                        "to continue it under this config on purpose")
    if (out / "metrics.json").exists():
        return None, json.loads((out / "metrics.json").read_text())
    last = out / "checkpoints" / "last.ckpt"
    return (str(last), None) if last.exists() else (None, None)


def command_line_overrides() -> list[str]:
    """The overrides typed on the command line (Hydra's ``overrides.task``); none outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


# Overrides that steer a resumed run without changing what it trains: how long, where, what is logged.
STEERING = ("trainer.max_epochs", "trainer.max_steps", "trainer.max_time", "trainer.devices", "trainer.accelerator",
            "trainer.num_nodes", "trainer.strategy", "trainer.enable_progress_bar", "trainer.log_every_n_steps",
            "trainer.default_root_dir", "data.loader.num_workers", "data.loader.pin_memory", "logger", "callbacks",
            "plots", "data_root", "compile")


def resume_config(cfg: DictConfig) -> DictConfig:
    """``train.py resume=<checkpoint or run dir>``: the run's own config (the one its checkpoint
    carries), continued in its own run dir. Overrides that only steer the run (:data:`STEERING`)
    are applied; one that changes what the checkpoint is (model, data, optimizer, their options) is
    refused here, before any data is made, naming the keys and the two ways on.

    What the user typed is what differs from the default config (``conf/train.yaml`` alone), so
    that repeating the original overrides (the older way to resume) is accepted as well.
    """
    path = checkpoint.resolve_path(cfg.resume, prefer="last")
    if path.is_dir():
        raise UserError(f"resume={cfg.resume} is a pretrained folder, which keeps no optimizer state to "
                        "continue: start from its weights with init_from= instead")
    ckpt = checkpoint.read(path)
    stored = OmegaConf.create(ckpt["neuropde"]["config"])
    name_parts(stored)
    default, given, kept = (_flat(to_dict(c)) for c in (compose_config("train", []), cfg, stored))
    ignore = ("resume", "run_dir", "init_from", "hydra")
    # typed: what differs from the default config, and every key under what the command line names
    # (model=sfno is the default, yet typed it asks for an SFNO)
    named = [a.split("=", 1)[0].lstrip("+~") for a in command_line_overrides()]
    typed = sorted(k for k in default.keys() | given.keys() if k.split(".")[0] not in ignore and (
        default.get(k, "<absent>") != given.get(k, "<absent>") or any(k == n or k.startswith(n + ".") for n in named)))
    steering = [k for k in typed if k.startswith(STEERING)]
    differ = [k for k in typed if k not in steering and kept.get(k, "<absent>") != given.get(k, "<absent>")]
    if differ:
        shown = "; ".join(f"{k}: {kept.get(k, '<absent>')} in the checkpoint, {given.get(k, '<absent>')} now"
                          for k in differ[:4]) + ("; …" if len(differ) > 4 else "")
        raise UserError(f"resume={cfg.resume} continues the run its checkpoint holds, and these overrides change it "
                        f"({shown}): drop them to continue it (only trainer.max_epochs, devices, loggers and the like "
                        "may change), or start a new run from its weights with init_from= instead of resume=")
    length = [k for k in steering if k in ("trainer.max_epochs", "trainer.max_steps") and kept.get(k) != given.get(k)]
    schedule = str((stored.get("scheduler") or {}).get("_target_") or "")
    from neuropde.optim.schedulers import SPAN_THE_RUN

    if length and schedule.rpartition(".")[2] in SPAN_THE_RUN:
        raise UserError(f"resume={cfg.resume}: {length[0]} {kept.get(length[0])} -> {given.get(length[0])} changes the "
                        f"length of a run whose learning rate follows {schedule.rpartition('.')[2]} planned over its "
                        "length, which has no plan past it: resume without changing the length, or train on from its "
                        f"weights with init_from={cfg.resume} and the new length")
    OmegaConf.set_struct(stored, False)
    # whole entries, not their leaves: logger=none replaces the logger's dict with null
    for entry in sorted({next(p for p in STEERING if k.startswith(p)) for k in steering}):
        OmegaConf.update(stored, entry, OmegaConf.select(cfg, entry), merge=False, force_add=True)
    stored.resume = str(path)
    stored.init_from = None
    # its own run dir, unless run_dir= says where the continued run goes
    home = cfg.get("run_dir") or (path.parent.parent if path.parent.name == "checkpoints" else path.parent)
    stored.run_dir = str(home)
    log.info("resume: continuing the run in %s from %s%s", home, path.name,
             f" (changed: {', '.join(steering)})" if steering else "")
    return stored


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
def name_parts(stored: DictConfig) -> None:
    """Bring a checkpoint's stored config up to today's names, in place.

    Configs written before data configs named their data module and generator (issue 25) get
    ``data._target_`` and ``data.generator._target_`` from ``conf/data/<data.name>.yaml``; a
    ``model.task`` or ``model.net`` ``_target_`` that no longer imports (a class renamed or moved)
    is taken from ``conf/model/<model.family>.yaml``. Nothing else changes: the weights, sizes and
    settings stay the checkpoint's own.
    """
    from neuropde.plugins import importable

    OmegaConf.set_struct(stored, False)
    data, model = stored.get("data"), stored.get("model")
    if data is not None and not data.get("_target_"):
        if not (CONF_DIR / "data" / f"{data.name}.yaml").exists():
            raise UserError(f"this checkpoint's data ({data.name}) predates data._target_ and has no config in "
                            f"{CONF_DIR / 'data'} to take it from: predict with data=<a data config> or set "
                            "data._target_ and data.generator._target_")
        current = compose_config("train", [f"data={data.name}"]).data
        data["_target_"] = current._target_
        if "generator" in data and "_target_" in current.get("generator", {}):
            data.generator["_target_"] = current.generator._target_
    stale = [k for k in ("task", "net") if model is not None and k in model and not importable(model[k].get("_target_"))]
    if stale and (CONF_DIR / "model" / f"{model.get('family')}.yaml").exists():
        current = compose_config("train", [f"model={model.family}"]).model
        for k in stale:
            model[k]["_target_"] = current[k]._target_


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


def check_same_fields(trained: dict, now: dict) -> None:
    """Refuse data whose fields differ from those the model was trained on (another grid is fine)."""
    keys = ("kind", "channels", "in_channels", "channel_names", "constant_names")
    differ = [k for k in keys if k in trained and k in now and trained[k] != now[k]]
    if differ:
        raise UserError("the model was trained on other fields than these data hold: "
                        + "; ".join(f"{k} {trained[k]} when trained, {now[k]} now" for k in differ)
                        + ". Predict on files of the same layout (data.keys, data.layout as in training)")


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
