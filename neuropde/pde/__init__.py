"""PDE solvers and spectral tools on periodic grids (reference data and physics losses)."""
from neuropde.pde.darcy import darcy_coefficient, darcy_grf, darcy_grid, solve_darcy
from neuropde.pde.navier_stokes import (
    NavierStokes2D,
    fno_forcing,
    gaussian_random_field,
    kolmogorov_forcing,
    make_forcing,
    mcwilliams_vorticity,
)
from neuropde.pde.spectral import (
    dealias_mask,
    fourier_resample,
    inverse_laplacian,
    spectral_grad,
    spectral_laplacian,
    wavenumbers,
)

__all__ = [
    "NavierStokes2D", "fno_forcing", "kolmogorov_forcing", "make_forcing",
    "gaussian_random_field", "mcwilliams_vorticity",
    "wavenumbers", "dealias_mask", "fourier_resample",
    "spectral_grad", "spectral_laplacian", "inverse_laplacian",
    "solve_darcy", "darcy_grf", "darcy_coefficient", "darcy_grid",
]
