"""Load a trained model in one line, and share it as a folder that holds no pickle.

``neuropde.load(path)`` takes a checkpoint file, a run dir (its ``checkpoints/best.ckpt``), a
pretrained folder or a Hugging Face Hub id, and gives the trained task: the network with its
normaliser, in eval mode, called on physical-unit tensors (``model(x)``).

A pretrained folder (``model.save_pretrained(dir)``) holds

- ``config.yaml``: the resolved config the model was trained with (everything that rebuilds it);
- ``model.safetensors``: the weights; complex tensors (spectral weights) as (..., 2) real pairs,
  their names listed in the file's metadata;
- ``neuropde.json``: normaliser statistics, Hydra choices, the package version;
- ``README.md``: a model card (family, data, test metrics, the command that trained it).

Reading it runs no ``torch.load`` and no pickle, so a folder someone sent you cannot run code.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from neuropde.errors import CheckpointError, UserError

WEIGHTS, CONFIG, META, CARD = "model.safetensors", "config.yaml", "neuropde.json", "README.md"


def is_pretrained(path: str | Path) -> bool:
    return (Path(path) / WEIGHTS).is_file()


def _safetensors():
    try:
        import safetensors.torch
    except ImportError:
        raise UserError("pretrained folders need the safetensors package: pip install safetensors") from None
    return safetensors.torch


def read_pretrained(directory: str | Path) -> dict:
    """A pretrained folder as a checkpoint dict (``{"state_dict", "neuropde": {config, choices,
    version, stats}}``, what :func:`neuropde.checkpoint.read` gives), without any pickle."""
    import yaml

    d = Path(directory)
    missing = [n for n in (WEIGHTS, CONFIG, META) if not (d / n).is_file()]
    if missing:
        raise CheckpointError(f"{d} is not a complete pretrained folder: {', '.join(missing)} missing "
                              f"(save_pretrained writes {WEIGHTS}, {CONFIG}, {META} and {CARD})")
    st = _safetensors()
    try:
        from safetensors import safe_open

        with safe_open(str(d / WEIGHTS), framework="pt") as f:
            complex_names = set(filter(None, (f.metadata() or {}).get("complex", "").split(",")))
        state = st.load_file(str(d / WEIGHTS))
    except Exception as err:  # a truncated or foreign file
        raise CheckpointError(f"cannot read {d / WEIGHTS}: not a safetensors file or corrupt "
                              f"({type(err).__name__}: {err})") from None
    for name in complex_names & state.keys():
        state[name] = torch.view_as_complex(state[name].contiguous())
    try:
        config = yaml.safe_load((d / CONFIG).read_text())
        meta = json.loads((d / META).read_text())
    except Exception as err:
        raise CheckpointError(f"cannot read the config of {d}: {type(err).__name__}: {err}") from None
    return {"state_dict": state, "neuropde": {"config": config, "choices": meta.get("choices", {}),
                                              "version": meta.get("version"), "stats": meta.get("stats")}}


def _atomic_write(path: Path, write) -> None:
    """``write(tmp)`` then rename: for the files :func:`atomic_write_json` does not cover."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save_pretrained(task, directory: str | Path, metrics: dict | None = None) -> Path:
    """Write ``task`` (a trained neuropde task, e.g. from :func:`load`) as a pretrained folder.

    ``metrics`` (default: the run's ``metrics.json`` when the task was loaded from a run) go into the
    model card. Each file is written atomically; the folder may already exist (files are replaced).
    """
    import yaml

    from neuropde import __version__
    from neuropde.data.store import atomic_write_json

    st = _safetensors()
    meta = dict(getattr(task, "meta", None) or {})
    if not meta.get("config"):
        raise UserError("this task has no config to save with it: save_pretrained takes a model from "
                        "neuropde.load(...) or from train()")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state, complex_names = {}, []
    for name, value in task.state_dict().items():
        value = value.detach().cpu()
        if value.is_complex():
            complex_names.append(name)
            value = torch.view_as_real(value)
        state[name] = value.contiguous()
    _atomic_write(d / WEIGHTS, lambda p: st.save_file(state, str(p), metadata={"complex": ",".join(complex_names),
                                                                                "format": "pt"}))
    _atomic_write(d / CONFIG, lambda p: p.write_text(yaml.safe_dump(meta["config"], sort_keys=False)))
    info = {"version": meta.get("version", __version__), "choices": meta.get("choices", {}), "stats": meta.get("stats")}
    atomic_write_json(d / META, info)
    metrics = metrics if metrics is not None else meta.get("metrics") or {}
    _atomic_write(d / CARD, lambda p: p.write_text(model_card(meta, metrics)))
    return d


def model_card(meta: dict, metrics: dict) -> str:
    """A short README.md: what the model is, what it was trained on, how well it did, how to use it."""
    cfg = meta["config"]
    family, data = cfg.get("model", {}).get("family", "?"), cfg.get("data", {}).get("name", "?")
    choices = {k: v for k, v in (meta.get("choices") or {}).items() if v is not None}
    command = "python train.py " + " ".join(f"{k}={v}" for k, v in sorted(choices.items())) if choices else \
        f"python train.py model={family} data={data}"
    rows = [f"| `{k}` | {v:.4g} |" for k, v in sorted(metrics.items())
            if isinstance(v, (int, float)) and not isinstance(v, bool) and re.match(r"(test|val)/", k)]
    table = "\n".join(["| metric | value |", "|---|---|", *rows]) if rows else "No test metrics were saved with it."
    return f"""---
library_name: neuropde
tags: [neural-operator, {family}]
---
# {family} on {data}

A `{family}` model trained with neuropde {meta.get('version', '?')} on the `{data}` data set
(resolution {cfg.get('data', {}).get('resolution', '?')}). Every setting is in `config.yaml`.

Trained with (`config.yaml` holds the resolved result, including any further overrides):

```
{command}
```

{table}

Use it:

```python
import neuropde
model = neuropde.load("<this folder>")   # or its Hub id
y = model(x)                             # physical units in and out
```

or `python predict.py ckpt=<this folder>`. The weights are in `model.safetensors` (no pickle).
"""


def _resolve(path: str | Path) -> Path:
    """A local path, or a Hub id ``org/name`` downloaded through ``huggingface_hub``."""
    p = Path(path).expanduser()
    if p.exists() or not re.fullmatch(r"[\w.-]+/[\w.-]+", str(path)):
        return p
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise UserError(f"{path} is not a local path; to load it from the Hugging Face Hub: "
                        "pip install huggingface_hub") from None
    return Path(snapshot_download(repo_id=str(path)))


def load(path: str | Path, device: str | torch.device | None = None):
    """The trained model at ``path`` (checkpoint file, run dir, pretrained folder or Hub id): its
    task module with the network and normaliser, in eval mode, on ``device`` (default: CPU).

    ``model(x)`` takes and returns physical-unit tensors; the shapes are those of the family's
    task ``forward`` (operators: (B, T_in, *space) -> (B, T_out, *space)).
    """
    from omegaconf import OmegaConf

    from neuropde import checkpoint
    from neuropde.run import build_task, name_parts

    p = _resolve(path)
    ckpt = checkpoint.read(p)
    cfg = OmegaConf.create(ckpt["neuropde"]["config"])
    name_parts(cfg)
    task = build_task(cfg, ckpt["neuropde"].get("stats"))
    try:
        task.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:  # shapes that do not fit the config: a tampered or mismatched file
        first = str(err).split("\n\t", 2)[1] if "\n\t" in str(err) else str(err)
        raise CheckpointError(f"the weights at {p} do not fit the network their config describes: {first}") from None
    task.meta = dict(ckpt["neuropde"])
    run_metrics = (p if p.is_dir() else p.parent.parent) / "metrics.json"
    if run_metrics.is_file():
        task.meta["metrics"] = json.loads(run_metrics.read_text())
    return task.to(device or "cpu").eval()
