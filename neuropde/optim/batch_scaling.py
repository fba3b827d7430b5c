"""Learning-rate scaling with the batch size (``optimizer.batch_scaling``)."""
from __future__ import annotations

from neuropde.errors import UserError


def lr_batch_factor(rule: str, reference: int | None, batch: int | None) -> float:
    """Learning-rate factor for a batch size other than the one the lr was tuned at.

    ``sqrt`` (Adam-type and orthogonalised rules) scales by √(batch / reference), ``linear`` (SGD)
    by batch / reference, ``none`` leaves the lr alone.

    Parameters
    ----------
    rule : ``none``, ``sqrt`` or ``linear``.
    reference : the batch size the lr was tuned at (``optimizer.reference_batch_size``).
    batch : the effective batch size (devices × accumulation × loader batch).
    """
    if rule not in ("none", "sqrt", "linear"):
        raise UserError(f"optimizer.batch_scaling={rule}: choose none, sqrt or linear")
    if rule == "none":
        return 1.0
    if not reference or not batch:
        raise UserError(f"optimizer.batch_scaling={rule} needs optimizer.reference_batch_size "
                        "(the batch size the learning rate was tuned at)")
    ratio = batch / float(reference)
    return ratio ** 0.5 if rule == "sqrt" else ratio
