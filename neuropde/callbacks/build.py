"""The run's logger and callbacks, instantiated from their config groups.

``conf/logger/<name>.yaml`` names one of Lightning's loggers by ``_target_`` (``logger=none``: no
logger); ``conf/callbacks/<name>.yaml`` is a mapping ``name -> {_target_: ..., options}``. Paths
in them (``save_dir``, ``dirpath``) are relative to the run dir, which is only known at run time,
so that a stored config stays valid when its run dir moves.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from neuropde.errors import UserError

PATH_KEYS = ("save_dir", "dirpath")  # options that name a place on disk: resolved against the run dir

# Lightning classes whose package is an optional dependency: class -> (pip name, modules, any of which
# serves). Lightning's own message at construction names neither the option nor the install command.
OPTIONAL = {
    "TensorBoardLogger": ("tensorboard", ("tensorboard", "tensorboardX")),
    "WandbLogger": ("wandb", ("wandb",)),
    "MLFlowLogger": ("mlflow", ("mlflow",)),
    "RichProgressBar": ("rich", ("rich",)),
}


def _group_file(group: str, name: str) -> DictConfig:
    """``conf/<group>/<name>.yaml`` as written (no defaults list followed); an unknown name is refused."""
    from neuropde import CONF_DIR

    path = CONF_DIR / group / f"{name}.yaml"
    if not path.exists():
        options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        raise UserError(f"{group}={name} is not an option; choose one of {', '.join(options)}")
    return OmegaConf.load(path)


def _nodes(cfg: DictConfig) -> dict:
    """``{where: node}`` for the logger (if any) and every callback of ``cfg``."""
    logger = cfg.get("logger", "csv")
    if isinstance(logger, str):  # a config from before logger was a group: `logger: csv`
        node = _group_file("logger", logger)
        logger = node if "_target_" in node else node.get("logger")  # none.yaml: `logger: null`, global
    callbacks = cfg.get("callbacks")
    if callbacks is None:  # a config from before callbacks were a group: the default ones, with the
        # two top-level keys they interpolate
        callbacks = OmegaConf.create({"monitor": cfg.get("monitor", "val/rel_l2"),
                                      "plot_every_n_epochs": cfg.get("plot_every_n_epochs", 1),
                                      "callbacks": _group_file("callbacks", "default")}).callbacks
    nodes = {"logger": logger} if logger else {}
    nodes.update({f"callbacks.{k}": v for k, v in callbacks.items() if v is not None})
    return nodes


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False


def check_packages(cfg: DictConfig) -> None:
    """Raise a :class:`UserError` naming the ``pip install`` when the chosen logger or a callback
    needs a package that is missing; cheap enough to call before any data or model is built."""
    for where, node in _nodes(cfg).items():
        cls = str(node.get("_target_", "")).rsplit(".", 1)[-1]
        if cls in OPTIONAL:
            pip, modules = OPTIONAL[cls]
            if not any(map(_importable, modules)):
                raise UserError(f"{where} ({cls}) needs the {pip} package, which is not installed: "
                                f"pip install {pip}")


def _instantiate(node, out: Path):
    paths = {k: str(out / str(node[k])) for k in PATH_KEYS if node.get(k) is not None}
    return instantiate(node, **paths, _convert_="all")


def _finish_wandb_run() -> None:
    """End the W&B run an earlier ``train()`` of this process left open (a sweep's jobs under Hydra's
    basic launcher): WandbLogger would otherwise reuse it, and this run's metrics would land in it."""
    import wandb

    if wandb.run is not None:
        wandb.finish()


def build_logger_and_callbacks(cfg: DictConfig, out: Path) -> tuple:
    """``(logger, callbacks)`` for ``lightning.Trainer``: the logger ``cfg.logger`` names (False for
    ``logger=none``) and the callbacks of ``cfg.callbacks`` in config order, writing under ``out``."""
    check_packages(cfg)
    nodes = _nodes(cfg)
    if str(nodes.get("logger", {}).get("_target_", "")).endswith("WandbLogger"):
        _finish_wandb_run()
    logger = _instantiate(nodes.pop("logger"), out) if "logger" in nodes else False
    return logger, [_instantiate(node, out) for node in nodes.values()]
