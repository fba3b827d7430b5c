"""Errors meant for the user: one clear line that names the fix (the scripts print them without a traceback)."""
from __future__ import annotations

import functools
import logging
import sys
from typing import Callable


class UserError(Exception):
    """Bad input: an option, a config combination, a file. The message says what to do."""


class CheckpointError(UserError):
    """A checkpoint is missing, corrupt, or not written by neuropde."""


def main_guard(main: Callable) -> Callable:
    """Decorate a script's Hydra task function (under ``@hydra.main``): a :class:`UserError` is
    logged as its one line, without a traceback, and the process exits with status 2. In a
    multirun the job returns None instead, so that one bad job of a sweep (a diverging learning
    rate, a missing checkpoint) does not end the others."""

    @functools.wraps(main)
    def guarded(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as err:
            logging.getLogger("neuropde").error(str(err))
            if _multirun():
                return None
            sys.exit(2)

    return guarded


def _multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def below_warning() -> Callable[[logging.LogRecord], bool]:
    """A logging filter for the scripts' stdout handler (``conf/hydra/job_logging/neuropde.yaml``):
    progress there, warnings and errors to stderr only."""
    return lambda record: record.levelno < logging.WARNING
