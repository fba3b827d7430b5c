"""Configs without the command line and the places they name: composing ``conf/<name>.yaml`` with
overrides (scripts, notebooks, tests), the run dir, the data root, the Hydra choices."""
from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from neuropde import CONF_DIR
from neuropde.errors import UserError


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
