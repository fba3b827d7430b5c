"""Optimizers and schedulers: each ``conf/optimizer/*.yaml`` names a factory ``(module, **options) -> Optimizer``."""
from __future__ import annotations

import logging

from neuropde.errors import UserError

log = logging.getLogger(__name__)

READ_HERE = ("_target_", "batch_scaling", "reference_batch_size")  # options build_optimizer reads itself


def factory_options(target: str) -> set[str] | None:
    """The options the factory ``target`` takes (its keywords but ``module``); None when it takes any."""
    import inspect

    from neuropde.plugins import import_target

    params = inspect.signature(import_target(target, "optimizer._target_")).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"module"}


def unknown_options(cfg: dict) -> list[str]:
    """The options of the optimizer config ``cfg`` that its factory does not take."""
    taken = factory_options(cfg["_target_"])
    return [] if taken is None else [k for k in cfg if k not in READ_HERE and k not in taken]


def rule_name(target: str) -> str:
    """``optimizer=<name> (<factory>)``: conf/optimizer/<name>.yaml is named after its factory."""
    return f"optimizer={str(target).rpartition('.')[2]} ({target})"


def rules_taking(option: str) -> list[str]:
    """The configs in conf/optimizer whose factory takes ``option``, for the messages."""
    import yaml

    from neuropde import CONF_DIR

    names = []
    for f in sorted((CONF_DIR / "optimizer").glob("*.yaml")):
        target = (yaml.safe_load(f.read_text()) or {}).get("_target_")
        taken = factory_options(target) if target else set()
        if taken is None or option in taken:
            names.append(f.stem)
    return names


def _typed(option: str, command_line) -> str | None:
    """The override of ``command_line`` (Hydra's ``overrides.task``) that set ``optimizer.<option>``."""
    for arg in command_line:
        key = arg.split("=", 1)[0].lstrip("+~")
        if key == f"optimizer.{option}" or key.startswith(f"optimizer.{option}."):
            return arg
    return None


def drop_foreign_options(cfg: dict, command_line=(), origin: str = "the experiment") -> list[str]:
    """The options of ``cfg`` (the ``optimizer`` config) that its rule does not take, to drop.

    An experiment tunes the rule it chose (``sdgd_pinn_quick``: Muon's ``ns_dtype``, the AdamW
    block of the rest); with another ``optimizer=`` those options do not apply, and each is
    dropped with a one-line notice. One typed on the command line (``command_line``, Hydra's
    ``overrides.task``) is a mistake and is refused, naming the option and the rule.
    """
    unknown = unknown_options(cfg)
    rule = rule_name(cfg["_target_"])
    for option in unknown:
        typed = _typed(option, command_line)
        if typed:
            others = rules_taking(option)
            raise UserError(f"{rule} takes no option {option} (set on the command line: {typed}); remove it"
                            + (f", or choose a rule that takes it: {', '.join(others)}" if others else ""))
    for option in unknown:
        log.info("optimizer.%s, set by %s, is not an option of %s: dropped", option, origin, rule)
    return unknown


def build_optimizer(cfg: dict, module, batch_size: int | None = None):
    """Instantiate ``optimizer=`` for ``module`` and apply ``batch_scaling`` to every group's lr.

    ``batch_size`` is the effective batch (devices × accumulation × loader batch); the keys
    ``batch_scaling`` and ``reference_batch_size`` are read here, not by the factories. An option
    the factory does not take stops with a :class:`UserError` naming it and the rule.
    """
    from hydra.utils import instantiate

    from neuropde.optim.batch_scaling import lr_batch_factor

    cfg = dict(cfg)
    unknown = unknown_options(cfg)
    if unknown:
        raise UserError(f"{rule_name(cfg['_target_'])} takes no option {', '.join(unknown)}: remove "
                        f"optimizer.{unknown[0]}, or choose a rule that takes it: "
                        f"{', '.join(rules_taking(unknown[0])) or 'none does'}")
    rule, reference = cfg.pop("batch_scaling", "none"), cfg.pop("reference_batch_size", None)
    from hydra.errors import InstantiationException

    try:
        opt = instantiate(cfg, module=module, _convert_="all")
    except InstantiationException as e:
        if isinstance(e.__cause__, UserError):  # the factory's own message names the fix: show it plainly
            raise e.__cause__ from None
        raise
    factor = lr_batch_factor(rule, reference, batch_size)
    if factor != 1.0:
        for group in opt.param_groups:
            group["lr"] *= factor
    return opt
