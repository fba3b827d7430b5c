"""Continuing runs: ``resume=auto`` (the same command again) and ``resume=<checkpoint or run dir>``
(the run the checkpoint holds, under its own config), and bringing a stored config up to today's
names (:func:`name_parts`)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
import yaml
from omegaconf import DictConfig, OmegaConf

from neuropde import CONF_DIR, checkpoint
from neuropde.checks import command_line_overrides
from neuropde.configs import compose_config, to_dict
from neuropde.errors import UserError

log = logging.getLogger("neuropde.run")


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
