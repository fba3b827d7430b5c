"""neuropde: neural operators and physics-informed learning with Lightning and Hydra."""

__version__ = "0.1.0"
