"""Checkpoints: Lightning's file plus ``checkpoint["neuropde"]`` = resolved config, Hydra choices,
package version and normaliser stats. Only primitives and tensors, so ``torch.load(path,
weights_only=True)`` works and a checkpoint someone sent you cannot run code on load.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from neuropde.errors import CheckpointError

log = logging.getLogger(__name__)


def resolve_path(path: str | Path) -> Path:
    """Accept a checkpoint file or a run directory (then ``checkpoints/best.ckpt`` in it)."""
    p = Path(path).expanduser()
    if p.is_dir():
        for cand in (p / "checkpoints" / "best.ckpt", p / "checkpoints" / "last.ckpt", p / "best.ckpt"):
            if cand.exists():
                return cand
        raise CheckpointError(f"no checkpoint in directory {p}: expected checkpoints/best.ckpt inside a run dir")
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p}; pass ckpt=<run dir>/checkpoints/best.ckpt")
    return p


def read(path: str | Path) -> dict:
    """Load a neuropde checkpoint dict on the CPU, with one clear error line when it can't be used."""
    p = resolve_path(path)
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, wrong format, unsafe pickle: all the same to the user
        raise CheckpointError(f"cannot read checkpoint {p}: the file is corrupt or not a torch checkpoint "
                              f"({type(err).__name__}); use another checkpoint, e.g. last.ckpt") from None
    if not isinstance(ckpt, dict) or "neuropde" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"{p} is not a neuropde checkpoint (no config inside); "
                              "checkpoints come from `python train.py`")
    return ckpt


def load_weights(task: torch.nn.Module, path: str | Path) -> int:
    """``init_from=``: copy every weight whose name and shape match; returns how many were copied."""
    sd = read(path)["state_dict"]
    own = task.state_dict()
    matched = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise CheckpointError(f"init_from={path}: no weight matches this model's names and shapes")
    task.load_state_dict({**own, **matched})
    skipped = sorted(set(own) - set(matched))
    log.info("init_from: loaded %d tensors from %s; %d kept their initial values%s", len(matched), path,
             len(skipped), f" ({', '.join(skipped[:5])}{', ...' if len(skipped) > 5 else ''})" if skipped else "")
    return len(matched)
