"""Data: HDF5 store, generators built on neuropde.pde, datamodules."""
