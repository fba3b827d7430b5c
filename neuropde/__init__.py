"""neuropde: neural operators and physics-informed learning with Lightning and Hydra."""
from omegaconf import OmegaConf

__version__ = "0.1.0"

# ${neuropde.repeat:16,2} -> [16, 16]: per-axis settings (Fourier modes) from the data's dimension.
OmegaConf.register_new_resolver("neuropde.repeat", lambda value, n: [value] * int(n), replace=True)
