"""Import what a config names by ``_target_`` (a data module, a generator, a task), failing with one
line that says which key named it, instead of Hydra's multi-line traceback and error log."""
from __future__ import annotations

import importlib

from neuropde.errors import UserError


def import_target(target: str, key: str, hint: str = ""):
    """The object at the dotted path ``target`` (``package.module.Name``), named by config key ``key``."""
    module, _, name = str(target).rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise UserError(f"{key}={target} cannot be imported ({err.__class__.__name__}: {err})"
                        + (f"; {hint}" if hint else "")) from None


def importable(target) -> bool:
    try:
        import_target(target, "_target_")
        return True
    except UserError:
        return False
