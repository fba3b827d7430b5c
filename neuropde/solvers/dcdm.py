"""DCDM's conjugate-direction solver with learned search directions (shared/reference/dcdm.md §2.6).

Iteration (x₀ = 0, r₀ = b)::

    q_k = direction(r_{k−1} / ‖r_{k−1}‖)                 one network call
    p_k = q_k − Σ_j (q_kᵀ A p_j / p_jᵀ A p_j) p_j          last n_orth directions, A p_j cached
    α_k = p_kᵀ r_{k−1} / p_kᵀ A p_k                        one mat-vec (A p_k)
    x_k = x_{k−1} + α_k p_k
    r_k = b − A x_k                                       one mat-vec: the TRUE residual

until ``‖r_k‖ ≤ tol·‖b‖``. ``direction`` is any callable on unknown vectors, typically a trained
:class:`~neuropde.models.dcdm.DCDMNet` through :func:`~neuropde.models.dcdm.network_direction`.
It is nonlinear and not SPD, so this is a conjugate-*direction* method, not PCG (reference pitfall
7): each exact line search lowers the A-norm error ``‖x − x*‖_A`` monotonically, but there is no
finite termination and no Krylov optimality.

Fallback: never stall silently
------------------------------
A step along ``p`` lowers ``‖e‖²_A`` by exactly ``gain(p) = (pᵀr)² / pᵀAp`` (``pᵀr = pᵀAe``: a
direction A-orthogonal to the error gains nothing). A steepest-descent or CG step gains at least
``‖r‖² / λ_max(A)`` (the CG direction ``r + βp`` has ``pᵀr = ‖r‖²`` and ``pᵀAp ≤ rᵀAr``). So the
proposed direction is rejected when::

    not finite,  or  pᵀAp ≤ 0,  or  gain(p) < fallback_threshold · ‖r‖² / λ̂

with ``λ̂ ≥ λ_max`` the Gershgorin bound (max absolute row sum) of A, and replaced by the
preconditioner-free CG-like direction: the residual itself, A-orthogonalised against the stored
directions. That costs one more mat-vec. The exact inverse (``gain = rᵀA⁻¹r ≥ ‖r‖²/λ_max``) and the
identity (CG) are never rejected for ``fallback_threshold ≤ 1``; a random direction in n unknowns
gains about ``2‖r‖²/(n λ_max)`` and is rejected for the default 0.1 once n exceeds ~20. The number
of fallbacks and the iterations they happened at are reported in :class:`DCDMResult`.

Singular systems: with ``project`` (a PoissonSystem) the constant mode of each closed region is
removed from ``b``, every direction, every residual and the returned ``x`` (reference pitfall 9),
as :func:`~neuropde.solvers.krylov.cg` does.
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import scipy.sparse as sp
import torch

from neuropde.solvers.krylov import SolveResult, _as_operator, _as_projection

__all__ = ["DCDMResult", "dcdm_solve", "gershgorin_bound"]


@dataclass
class DCDMResult(SolveResult):
    """:class:`~neuropde.solvers.krylov.SolveResult` plus DCDM's counters.

    Attributes
    ----------
    (SolveResult's, with ``residuals`` the TRUE relative residuals ``‖b − A x_k‖ / ‖b‖``, and:)
    direction_calls : calls of ``direction`` (network inferences), one per iteration.
    fallbacks : iterations whose proposed direction was rejected and replaced by the CG-like one.
    fallback_iterations : the (1-based) iteration numbers where that happened.
    """

    direction_calls: int = 0
    fallbacks: int = 0
    fallback_iterations: list = field(default_factory=list)


def gershgorin_bound(A) -> float:
    """Upper bound on the spectral radius: ``max_i Σ_j |a_ij|``, for a torch (sparse CSR/COO or
    dense) tensor, a scipy sparse matrix or an ndarray."""
    if sp.issparse(A):
        return float(abs(A).sum(axis=1).max()) if A.shape[0] else 0.0
    if isinstance(A, np.ndarray):
        return float(np.abs(A).sum(axis=1).max()) if A.shape[0] else 0.0
    if isinstance(A, torch.Tensor):
        if A.layout == torch.sparse_csr:
            abs_A = torch.sparse_csr_tensor(A.crow_indices(), A.col_indices(), A.values().abs(), size=A.shape,
                                            check_invariants=False)
            rows = abs_A @ torch.ones(A.shape[1], dtype=A.dtype, device=A.device)
        elif A.layout == torch.sparse_coo:
            rows = torch.sparse.sum(A.coalesce().abs(), dim=1).to_dense()
        else:
            rows = A.abs().sum(dim=1)
        return float(rows.max().item()) if rows.numel() else 0.0
    raise TypeError(f"cannot bound the spectrum of {type(A).__name__}: pass lambda_max")


def dcdm_solve(A, b, direction: Callable, tol: float = 1e-4, maxiter: int = 100, n_orth: int = 2,
               project=None, fallback: bool = True, *, fallback_threshold: float = 0.1,
               lambda_max: float | None = None, callback: Callable | None = None,
               dtype: torch.dtype = torch.float64) -> DCDMResult:
    """Solve ``A x = b`` by conjugate directions proposed by ``direction`` (see the module docstring).

    Parameters
    ----------
    A : torch sparse CSR (or any torch tensor), scipy sparse matrix, or a callable ``v -> A v``
        (then ``lambda_max`` is required).
    b : Tensor or ndarray (n,).
    direction : callable ``r̂ (n,) -> q (n,)`` on unit-norm residuals (a Tensor in ``dtype`` on b's
        device); may return another float dtype or an ndarray. E.g.
        ``network_direction(net, system)``.
    tol : stop when ``‖b − A x‖ ≤ tol·‖b‖`` (b after projection).
    maxiter : at most this many iterations (``converged=False`` after, no exception).
    n_orth : directions kept for the local A-orthogonalisation (reference: 2; 0 disables it).
    project : None, a PoissonSystem or a callable ``v -> P v`` removing the null space; needed for
        singular (closed-region) systems.
    fallback : replace rejected directions by the CG-like one. With False a weak direction is used
        as it is and only an unusable one (non-finite, ``pᵀAp ≤ 0``) stops the solve.
    fallback_threshold : θ of the rejection test ``gain(p) < θ·‖r‖²/λ̂``.
    lambda_max : λ̂, an upper bound on the largest eigenvalue; default the Gershgorin bound of A.
    callback : called as ``callback(x)`` after every iteration (x is the live iterate: copy it).
    dtype : working precision (float64 by default); the result is on b's device.

    Returns
    -------
    DCDMResult: ``iterations`` = directions used, ``residuals`` the true relative residuals
    (``len == iterations + 1``), ``matvecs`` (2 per iteration, 3 with a fallback), ``direction_calls``,
    ``fallbacks``, ``fallback_iterations``; ``message`` says why an unconverged solve stopped early.
    """
    t0 = time.perf_counter()
    if int(maxiter) < 0:
        raise ValueError(f"maxiter must be ≥ 0; got {maxiter}")
    if int(n_orth) < 0:
        raise ValueError(f"n_orth must be ≥ 0; got {n_orth}")
    if not tol > 0:
        raise ValueError(f"tol must be positive; got {tol}")
    if not fallback_threshold >= 0:
        raise ValueError(f"fallback_threshold must be ≥ 0; got {fallback_threshold}")
    b = torch.as_tensor(b)
    device = b.device
    b = b.to(dtype=dtype)
    if b.dim() != 1:
        raise ValueError(f"b must be a vector (n,); got shape {tuple(b.shape)} (batched solves are not supported)")
    n = b.shape[0]
    if lambda_max is None:
        if callable(A) and not isinstance(A, torch.Tensor) and not sp.issparse(A):
            raise ValueError("A is a callable, so its spectrum cannot be bounded: pass lambda_max (an upper bound "
                             "on A's largest eigenvalue, e.g. 4·dim for the unscaled Poisson matrix)")
        lambda_max = gershgorin_bound(A)
    matvec = _as_operator(A, dtype, device)
    P = _as_projection(project)
    proj = P if P is not None else (lambda v: v)
    b = proj(b)
    bnorm = torch.linalg.vector_norm(b).item()
    if bnorm == 0.0:
        return DCDMResult(x=torch.zeros_like(b), iterations=0, residuals=[0.0], converged=True,
                          seconds=time.perf_counter() - t0)

    x = torch.zeros_like(b)
    r = b.clone()
    residuals = [1.0]
    converged = 1.0 <= tol
    stored: deque = deque(maxlen=int(n_orth))  # (p_j, A p_j, p_jᵀ A p_j), mutually A-orthogonal
    matvecs = calls = 0
    fallback_at: list[int] = []
    message = ""

    def conjugate(q: torch.Tensor):
        """A-orthogonalise q against the stored directions (modified Gram–Schmidt with the cached
        A p_j: no mat-vec), then one mat-vec for A p. Returns (p, Ap, pᵀAp)."""
        nonlocal matvecs
        p = proj(q)
        for pj, Apj, pApj in stored:
            p = p - (torch.dot(p, Apj) / pApj) * pj
        Ap = matvec(p)
        matvecs += 1
        return p, Ap, torch.dot(p, Ap).item()

    k = 0
    while not converged and k < int(maxiter):
        rnorm = torch.linalg.vector_norm(r).item()
        q = direction(r / rnorm)
        calls += 1
        q = torch.as_tensor(q).to(dtype=dtype, device=device)
        if q.shape != (n,):
            raise ValueError(f"direction must return a vector of shape ({n},); got {tuple(q.shape)}")
        # gain threshold: a CG-like step removes at least ‖r‖²/λ_max of ‖e‖²_A
        needed = fallback_threshold * rnorm * rnorm / lambda_max
        step = None
        usable = False
        if bool(torch.isfinite(q).all()):
            step = conjugate(q)
            p, _, pAp = step
            pr = torch.dot(p, r).item()
            usable = pAp > 0.0 and math.isfinite(pAp) and math.isfinite(pr)
            good = usable and pr * pr / pAp >= needed
        else:
            good = False
        if not good:
            if fallback:
                fallback_at.append(k + 1)
                step = conjugate(r)
                if not (step[2] > 0.0 and math.isfinite(step[2])):
                    message = (f"breakdown at iteration {k + 1}: the fallback direction has pᵀAp = {step[2]:.3e} "
                               "(A not positive definite on range(A), or a singular system without project?)")
                    break
            elif not usable:
                message = (f"unusable direction at iteration {k + 1} (non-finite or pᵀAp ≤ 0) and fallback=False")
                break
        p, Ap, pAp = step
        alpha = torch.dot(p, r).item() / pAp
        x.add_(p, alpha=alpha)
        # the true residual, recomputed (reference §2.6.4): no recursive drift
        r = proj(b - matvec(x))
        matvecs += 1
        k += 1
        stored.append((p, Ap, pAp))
        rel = torch.linalg.vector_norm(r).item() / bnorm
        residuals.append(rel)
        if callback is not None:
            callback(x)
        if rel <= tol:
            converged = True
            break
        if not math.isfinite(rel):
            message = f"non-finite residual at iteration {k}"
            break
    if P is not None:
        x = P(x)
    return DCDMResult(x=x, iterations=k, residuals=residuals, converged=converged,
                      seconds=time.perf_counter() - t0, matvecs=matvecs, message=message,
                      direction_calls=calls, fallbacks=len(fallback_at), fallback_iterations=fallback_at)
