"""Reusable network blocks: spectral convolutions, MLPs, attention, adapters."""

from neuropde.nn.spectral import SpectralConv

__all__ = ["SpectralConv"]
