"""Optimizers and schedulers: each ``conf/optimizer/*.yaml`` names a factory ``(module, **options) -> Optimizer``."""
from __future__ import annotations


def build_optimizer(cfg: dict, module, batch_size: int | None = None):
    """Instantiate ``optimizer=`` for ``module`` and apply ``batch_scaling`` to every group's lr.

    ``batch_size`` is the effective batch (devices × accumulation × loader batch); the keys
    ``batch_scaling`` and ``reference_batch_size`` are read here, not by the factories.
    """
    from hydra.utils import instantiate

    from neuropde.optim.batch_scaling import lr_batch_factor

    cfg = dict(cfg)
    rule, reference = cfg.pop("batch_scaling", "none"), cfg.pop("reference_batch_size", None)
    from hydra.errors import InstantiationException

    from neuropde.errors import UserError

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
