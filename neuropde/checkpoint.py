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


def resolve_path(path: str | Path, prefer: str = "best") -> Path:
    """Accept a checkpoint file or a run directory: then its ``checkpoints/best.ckpt`` (for
    predictions and weights), or ``checkpoints/last.ckpt`` with ``prefer="last"`` (for resuming:
    the best epoch may lie epochs before the end), the other one when only that exists."""
    p = Path(path).expanduser()
    if p.is_dir() and (p / "model.safetensors").is_file():  # a pretrained folder (neuropde.pretrained)
        return p
    if p.is_dir():
        names = ("best.ckpt", "last.ckpt") if prefer == "best" else ("last.ckpt", "best.ckpt")
        for cand in (*(p / "checkpoints" / n for n in names), *(p / n for n in names)):
            if cand.exists():
                return cand
        raise CheckpointError(f"no checkpoint in directory {p}: expected checkpoints/{names[0]} inside a run dir")
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p}; pass ckpt=<run dir>/checkpoints/best.ckpt")
    return p


def read(path: str | Path) -> dict:
    """Load a neuropde checkpoint dict on the CPU, with one clear error line when it can't be used.
    A pretrained folder gives the same dict (its weights, config and statistics), read without pickle."""
    p = resolve_path(path)
    if p.is_dir():
        from neuropde.pretrained import read_pretrained

        return _check_version(read_pretrained(p), p)
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, wrong format, unsafe pickle: all the same to the user
        raise CheckpointError(f"cannot read checkpoint {p}: the file is corrupt or not a torch checkpoint "
                              f"({type(err).__name__}); use another checkpoint, e.g. last.ckpt") from None
    if not isinstance(ckpt, dict) or "neuropde" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"{p} is not a neuropde checkpoint (no config inside); "
                              "checkpoints come from `python train.py`")
    return _check_version(ckpt, p)


def _major(version) -> int | None:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return None


def _check_version(ckpt: dict, path: Path) -> dict:
    """Warn when the checkpoint was written by a newer major version of neuropde: its config may
    name options or parts this version lacks, or mean them differently (see CHANGELOG.md). Older
    checkpoints are this version's to read, so they pass in silence."""
    from neuropde import __version__

    written = (ckpt.get("neuropde") or {}).get("version")
    theirs, ours = _major(written), _major(__version__)
    if theirs is not None and ours is not None and theirs > ours:
        log.warning("%s was written by neuropde %s, a newer major version than this one (%s): it may not load "
                    "or may behave differently; upgrade with pip install -U neuropde", path, written, __version__)
    return ckpt


def _merge_lora(sd: dict, own: dict, ckpt: dict, path) -> dict:
    """A LoRA-fine-tuned checkpoint (``<layer>.base.<name>``, ``<layer>.lora_A``, ``<layer>.lora_B``)
    loaded into a model without adapters: each adapted layer's weight becomes W₀ + α·ΔW (what the
    fine-tuned model computed) under its plain name, ``<layer>.weight`` for linear and 1×1-conv
    adapters, ``<layer>.tensor`` for spectral ones (the dense tensor of a SpectralConv's weight), with
    α from the checkpoint's config (``model.task.lora_alpha``); the other base tensors (biases) are
    renamed. Without this the base names would match nothing and the layers would silently keep
    their random initial values. Layers that this model adapts too are left to load as they are."""
    from neuropde.nn.lora import lora_delta

    merges = {}  # layer prefix -> name of its weight under base.
    for k in sd:
        if k.endswith(".lora_A") and k not in own:
            p = k[:-len(".lora_A")]
            name = next((n for n in ("weight", "tensor") if f"{p}.base.{n}" in sd), None)
            if name is not None and f"{p}.{name}" in own:
                merges[p] = name
    if not merges:
        return sd
    alpha = (((ckpt.get("neuropde") or {}).get("config") or {}).get("model") or {}).get("task", {}).get("lora_alpha")
    if alpha is None:
        raise CheckpointError(f"init_from={path} holds LoRA adapters but no model.task.lora_alpha in its config, so "
                              f"they cannot be merged: fine-tune from it with model.task.lora_rank > 0 instead")
    sd = dict(sd)
    for p, name in merges.items():
        w = sd.pop(f"{p}.base.{name}")
        sd[f"{p}.{name}"] = w + lora_delta(sd.pop(f"{p}.lora_A"), sd.pop(f"{p}.lora_B"), float(alpha), w.shape)
        for k in [k for k in sd if k.startswith(f"{p}.base.")]:
            sd[f"{p}.{k[len(p) + len('.base.'):]}"] = sd.pop(k)
    log.info("init_from: merged the LoRA adapters of %d layers into their weights (alpha %s)", len(merges), alpha)
    return sd


def _neuralop_into_fourier_nets(task: torch.nn.Module, state: dict) -> dict:
    """Where this model has a FourierNet (``backend=neuropde``) and the checkpoint has
    neuraloperator's FNO at the same place (``backend=neuralop``), convert those weights."""
    from neuropde.nn.fourier_net import FourierNet, convert_neuralop_state

    for name, module in task.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, FourierNet) and f"{prefix}fno_blocks.convs.0.weight.tensor" in state:
            state = convert_neuralop_state(state, prefix)
            log.info("init_from: neuraloperator FNO weights converted for %s (backend=neuropde)", name or "the model")
    return state


def load_weights(task: torch.nn.Module, path: str | Path) -> int:
    """``init_from=``: copy every weight whose name and shape match; returns how many were copied.
    LoRA adapters of a fine-tuned checkpoint are merged into their layers when this model has none."""
    ckpt = read(path)
    own = task.state_dict()
    sd = _neuralop_into_fourier_nets(task, _merge_lora(ckpt["state_dict"], own, ckpt, path))
    matched = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise CheckpointError(f"init_from={path}: no weight matches this model's names and shapes")
    task.load_state_dict({**own, **matched})
    skipped = sorted(set(own) - set(matched))
    log.info("init_from: loaded %d tensors from %s; %d kept their initial values%s", len(matched), path,
             len(skipped), f" ({', '.join(skipped[:5])}{', ...' if len(skipped) > 5 else ''})" if skipped else "")
    return len(matched)
