"""neuropde: neural operators and physics-informed learning with Lightning and Hydra."""
import math
from pathlib import Path

from omegaconf import OmegaConf

__version__ = "0.1.0"  # the one source: pyproject.toml reads it, checkpoints record it (CHANGELOG.md)



def _conf_dir() -> Path:
    """The Hydra configs every part is named in: ``neuropde/conf`` in an installed wheel (the
    build copies the repository's ``conf/`` there, see ``setup.py``), else the checkout's ``conf/``."""
    package = Path(__file__).resolve().parent
    return package / "conf" if (package / "conf").is_dir() else package.parent / "conf"


CONF_DIR = _conf_dir()


def load(path, device=None):
    """The trained model at ``path``: a checkpoint file, a run dir, a pretrained folder or a Hub
    id. See :func:`neuropde.pretrained.load`. (Imported on first use: ``import neuropde`` stays light.)"""
    from neuropde.pretrained import load as _load

    return _load(path, device=device)


__all__ = ["load", "__version__", "CONF_DIR"]

# ${neuropde.repeat:16,2} -> [16, 16]: per-axis settings (Fourier modes) from the data's dimension.
OmegaConf.register_new_resolver("neuropde.repeat", lambda value, n: [value] * int(n), replace=True)
# ${neuropde.mul:${data.window.t_in},${data.spec.in_channels}} -> frames × channels: the channels of a
# network that sees every field of every frame as one input channel
OmegaConf.register_new_resolver("neuropde.mul", lambda *values: int(math.prod(int(v) for v in values)), replace=True)
