"""Optimizers and schedulers: each ``conf/optimizer/*.yaml`` names a factory ``(module, **options) -> Optimizer``."""
