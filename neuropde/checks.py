"""Checks that run before any data is made or any large model is built (``train`` calls them
first): the model fits the data, the grid holds the model's modes, the network can be built, the
user's files are what they say (their facts filled into ``data.spec``), optimizer options belong
to the chosen rule, ``compile=`` names a mode. Each refuses with one :class:`UserError` line."""
from __future__ import annotations

import logging

import torch
import yaml
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from neuropde import CONF_DIR
from neuropde.configs import hydra_choices, to_dict
from neuropde.errors import UserError

log = logging.getLogger("neuropde.run")


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
    periodic = spec.get("periodic")
    if cfg.model.get("periodic_only", False) and periodic is not None and not all(periodic):
        raise UserError(f"model={cfg.model.family} takes periodic fields (its spectral layers wrap around every axis), "
                        f"and data={cfg.data.name} is periodic only along {list(periodic)}: use model=fno, which "
                        "pads the other axes, or data.periodic=true if the fields are periodic after all")
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


def command_line_overrides() -> list[str]:
    """The overrides typed on the command line (Hydra's ``overrides.task``); none outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def compile_mode(mode) -> str | None:
    """torch.compile's mode for ``compile=`` (None: not compiled); an unknown value is refused."""
    modes = {False: None, None: None, True: "default", "false": None, "true": "default",
             "default": "default", "reduce-overhead": "reduce-overhead", "max-autotune": "max-autotune",
             "max-autotune-no-cudagraphs": "max-autotune-no-cudagraphs"}
    if mode not in modes:
        raise UserError(f"compile={mode} is not an option; choose false, true, reduce-overhead, max-autotune "
                        "or max-autotune-no-cudagraphs")
    return modes[mode]


def check_same_fields(trained: dict, now: dict) -> None:
    """Refuse data whose fields differ from those the model was trained on (another grid is fine)."""
    keys = ("kind", "channels", "in_channels", "channel_names", "constant_names")
    differ = [k for k in keys if k in trained and k in now and trained[k] != now[k]]
    if differ:
        raise UserError("the model was trained on other fields than these data hold: "
                        + "; ".join(f"{k} {trained[k]} when trained, {now[k]} now" for k in differ)
                        + ". Predict on files of the same layout (data.keys, data.layout as in training)")
