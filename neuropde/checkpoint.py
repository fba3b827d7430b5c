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


def _merge_lora(sd: dict, own: dict, ckpt: dict, path) -> dict:
    """A LoRA-fine-tuned checkpoint (``<layer>.base.weight``, ``<layer>.lora_A``, ``<layer>.lora_B``)
    loaded into a model without adapters: each adapted layer becomes ``<layer>.weight`` =
    W₀ + α·B A (what the fine-tuned model computed), with α from the checkpoint's config
    (``model.task.lora_alpha``). Without this the base names would match nothing and the layers
    would silently keep their random initial values."""
    prefixes = [k[:-len(".lora_A")] for k in sd if k.endswith(".lora_A") and k not in own and
                f"{k[:-len('.lora_A')]}.weight" in own]
    if not prefixes:
        return sd
    alpha = (((ckpt.get("neuropde") or {}).get("config") or {}).get("model") or {}).get("task", {}).get("lora_alpha")
    if alpha is None:
        raise CheckpointError(f"init_from={path} holds LoRA adapters but no model.task.lora_alpha in its config, so "
                              f"they cannot be merged: fine-tune from it with model.task.lora_rank > 0 instead")
    sd = dict(sd)
    for p in prefixes:
        sd[f"{p}.weight"] = sd.pop(f"{p}.base.weight") + float(alpha) * sd.pop(f"{p}.lora_B") @ sd.pop(f"{p}.lora_A")
        if f"{p}.base.bias" in sd:
            sd[f"{p}.bias"] = sd.pop(f"{p}.base.bias")
    log.info("init_from: merged the LoRA adapters of %d layers into their weights (alpha %s)", len(prefixes), alpha)
    return sd


def load_weights(task: torch.nn.Module, path: str | Path) -> int:
    """``init_from=``: copy every weight whose name and shape match; returns how many were copied.
    LoRA adapters of a fine-tuned checkpoint are merged into their layers when this model has none."""
    ckpt = read(path)
    own = task.state_dict()
    sd = _merge_lora(ckpt["state_dict"], own, ckpt, path)
    matched = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise CheckpointError(f"init_from={path}: no weight matches this model's names and shapes")
    task.load_state_dict({**own, **matched})
    skipped = sorted(set(own) - set(matched))
    log.info("init_from: loaded %d tensors from %s; %d kept their initial values%s", len(matched), path,
             len(skipped), f" ({', '.join(skipped[:5])}{', ...' if len(skipped) > 5 else ''})" if skipped else "")
    return len(matched)
