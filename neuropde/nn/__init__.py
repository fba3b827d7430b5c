"""Reusable network blocks: spectral convolutions, MLPs, attention, adapters."""

from neuropde.nn.fourier_net import FourierNet
from neuropde.nn.spectral import SpectralConv

__all__ = ["FourierNet", "SpectralConv"]
