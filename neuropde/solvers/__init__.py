"""Classical iterative solvers and preconditioners (baselines for learned solvers)."""
from neuropde.solvers.krylov import IncompleteCholesky, SolveResult, cg, incomplete_cholesky, jacobi_preconditioner

__all__ = ["SolveResult", "cg", "jacobi_preconditioner", "incomplete_cholesky", "IncompleteCholesky"]
