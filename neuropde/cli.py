"""The command line: ``neuropde-train``, ``neuropde-predict``, ``neuropde-generate``,
``neuropde-export`` (console scripts of the installed package) and the repository's ``train.py``,
``predict.py``, ``generate.py``, ``export.py`` (shims that call these same functions). Arguments are Hydra overrides; see
``--help`` and the README.
"""
import sys
import textwrap
from pathlib import Path

import hydra
from omegaconf import OmegaConf

from neuropde import CONF_DIR
from neuropde.errors import main_guard


def _command() -> str:
    """The command as the user typed it, for ``--help``: ``python train.py`` or ``neuropde-train``."""
    prog = Path(sys.argv[0]).name
    return f"python {prog}" if prog.endswith(".py") else prog


def _options(group: str) -> str:
    """The options of ``conf/<group>/`` for ``--help``, wrapped under the group's line (read from
    the files so that a new family or data set is listed without editing the help text)."""
    names = ", ".join(sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")))
    indent = " " * 14  # where the templates put the list
    return textwrap.fill(names, width=96, initial_indent=indent, subsequent_indent=indent).lstrip()


# the help templates (conf/hydra/help/*.yaml) use these
OmegaConf.register_new_resolver("neuropde.command", _command, replace=True)
OmegaConf.register_new_resolver("neuropde.options", _options, replace=True)

# Hydra names the job (log file, --help) after the module of the task function, here "cli":
# each config sets hydra.job.name to its script's name instead.
_configs = str(CONF_DIR)  # absolute: the same configs from a checkout and from an installed wheel


@hydra.main(config_path=_configs, config_name="train", version_base="1.3")
@main_guard
def _train(cfg):
    from neuropde.run import route_lightning_logging, train as run_train

    route_lightning_logging()
    return run_train(cfg).get("test/rel_l2")  # the value a sweeper (Optuna, say) minimises


@hydra.main(config_path=_configs, config_name="predict", version_base="1.3")
@main_guard
def _predict(cfg):
    from neuropde.run import predict as run_predict, route_lightning_logging

    route_lightning_logging()
    run_predict(cfg)


@hydra.main(config_path=_configs, config_name="generate", version_base="1.3")
@main_guard
def _generate(cfg):
    from neuropde.run import generate as run_generate, route_lightning_logging

    route_lightning_logging()
    run_generate(cfg)


@hydra.main(config_path=_configs, config_name="export", version_base="1.3")
@main_guard
def _export(cfg):
    from neuropde.export import run as run_export
    from neuropde.run import route_lightning_logging

    route_lightning_logging()
    run_export(cfg)


def train():
    """``neuropde-train model=sfno data=ns2d [optimizer=...] [key=value ...]``."""
    return _train()


def predict():
    """``neuropde-predict ckpt=PATH [data=<name>] [data.resolution=128] [split=test] [refine=true]``."""
    from neuropde.run import predict_shorthands

    sys.argv = sys.argv[:1] + predict_shorthands(sys.argv[1:])  # before Hydra parses them
    return _predict()


def generate():
    """``neuropde-generate data=ns2d [data.resolution=...]`` (resumes if interrupted)."""
    return _generate()


def export():
    """``neuropde-export ckpt=PATH format=onnx|torch_export|safetensors [out=PATH]``."""
    return _export()
