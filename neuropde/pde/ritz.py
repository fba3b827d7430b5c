"""Training right-hand sides for DCDM from Ritz vectors of a pressure-Poisson matrix.

DCDM (shared/reference/dcdm.md §2.4) trains its network on right-hand sides that are random
combinations of Ritz vectors of the training matrix (the empty box, pure Neumann), with the
smooth (low-eigenvalue) modes weighted up: those are the modes CG converges slowly on, so they are
what the learned directions must get right.

* :func:`ritz_vectors` computes the Ritz pairs: an exact dense eigendecomposition for small
  systems, otherwise ``m`` steps of Lanczos with full reorthogonalisation started from ``A z``.
  Null-space pairs (Ritz value < 1e-8 · largest) are dropped, so every returned vector lies in
  range(A) and every training vector is a compatible right-hand side.
* :func:`training_vectors` draws unit-norm combinations ``b = Σ c_k v_k``.
* :func:`train_val_vectors` does both with generators spawned from one seed, so the training and
  validation sets are independent draws and checked disjoint (the reference implementation let its
  validation slice leak into training, §5 pitfall 1).

Memory: Lanczos keeps all ``m`` basis vectors, ``8·n·m`` bytes (float64): 2 000 vectors at 64³
take 4.2 GB. The dense path needs ``8·n²`` bytes (200 MB at ``n = 5000``).
"""
from __future__ import annotations

import numpy as np
import scipy.linalg as sla

from neuropde.pde.poisson import PoissonSystem, _rng

__all__ = ["ritz_vectors", "training_vectors", "train_val_vectors"]

# Ritz values below this fraction of the largest one are the Neumann null space (reference §2.4.3)
NULL_RELATIVE = 1e-8


def _lanczos(system: PoissonSystem, m: int, g: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``m`` Lanczos steps with full reorthogonalisation on range(A); Ritz pairs, ascending.

    Every new basis vector is orthogonalised twice against all earlier ones (classical
    Gram–Schmidt, "twice is enough") and projected onto range(A). An invariant subspace (β ≈ 0,
    common here: the box Laplacian has highly degenerate eigenvalues, and one Krylov sequence sees
    only one vector per eigenspace) restarts the recurrence with a fresh ``A z`` orthogonalised
    against the basis, so T becomes block diagonal and ``m = rank(A)`` gives every eigenpair.
    """
    A = system.matrix_scipy()
    n = system.n
    project = system.project_out_nullspace
    V = np.empty((m, n))  # rows: contiguous access for the Gram–Schmidt products
    alpha = np.zeros(m)
    beta = np.zeros(m)
    anorm = 0.0

    def fresh_start(k: int) -> np.ndarray | None:
        """A z in range(A), orthogonal to V[:k], unit norm; None when range(A) is exhausted."""
        w = project(A @ g.standard_normal(n))
        size = np.linalg.norm(w)
        for _ in range(2):
            w -= V[:k].T @ (V[:k] @ w)
        w = project(w)
        norm = np.linalg.norm(w)
        return w / norm if norm > 1e-10 * size and norm > 0 else None

    v = fresh_start(0)
    if v is None:
        raise ValueError("A is zero on every start vector (no fluid coupling at all): there are no Ritz vectors")
    k = 0
    for j in range(m):
        V[j] = v
        k = j + 1
        w = A @ v
        alpha[j] = v @ w
        w -= alpha[j] * v
        if j > 0:
            w -= beta[j - 1] * V[j - 1]
        for _ in range(2):
            w -= V[:k].T @ (V[:k] @ w)
        w = project(w)
        beta[j] = np.linalg.norm(w)
        anorm = max(anorm, abs(alpha[j]) + beta[j] + (beta[j - 1] if j else 0.0))
        if j + 1 == m:
            break
        if beta[j] > 1e-10 * anorm:
            v = w / beta[j]
            continue
        # invariant subspace: restart; the zero coupling makes T block diagonal
        beta[j] = 0.0
        v = fresh_start(k)
        if v is None:
            break
    values, S = sla.eigh_tridiagonal(alpha[:k], beta[:k - 1])
    return values, V[:k].T @ S


def ritz_vectors(system: PoissonSystem, m: int, rng, dense_below: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    """Ritz values and vectors of ``system``'s matrix, null space dropped.

    Parameters
    ----------
    system : the training system (DCDM uses the obstacle-free box, :func:`~neuropde.pde.poisson.empty_box`).
    m : Lanczos steps (Ritz pairs before dropping); capped at n. Not used by the dense path,
        which returns every eigenpair (the ``m = n`` limit of Lanczos).
    rng : np.random.Generator or integer seed (the Lanczos start vector ``A z``, ``z ~ N(0, I)``,
        and restart vectors).
    dense_below : ``n ≤ dense_below`` uses ``numpy.linalg.eigh`` on the dense matrix.

    Returns
    -------
    values : float64 (k,), ascending, all ≥ 1e-8 · max.
    vectors : float64 (n, k), orthonormal columns, ``A v_i ≈ values[i] v_i`` (exactly for the dense
        path; for Lanczos only the converged, extreme pairs are eigenpairs, the interior ones are
        Ritz approximations as in the reference).
    """
    if int(m) < 1:
        raise ValueError(f"m must be ≥ 1 Lanczos steps; got {m}")
    g = _rng(rng)
    if system.n <= int(dense_below):
        values, vectors = np.linalg.eigh(system.matrix_scipy().toarray())
    else:
        values, vectors = _lanczos(system, min(int(m), system.n), g)
    keep = values >= NULL_RELATIVE * values.max()
    return values[keep], np.ascontiguousarray(vectors[:, keep])


def training_vectors(values, vectors, count: int, rng, smooth_fraction: float = 0.55,
                     smooth_scale: float = 9.0) -> np.ndarray:
    """Random unit-norm combinations of Ritz vectors, biased to the smooth modes.

    ``b = Σ_k c_k v_k`` with ``c_k ~ N(0, 1)``, except the lowest ``round(smooth_fraction · k)``
    modes, whose coefficients have standard deviation ``smooth_scale`` (reference: the lowest
    ``m/2 + m/20`` of ``m`` modes with std 9); then ``b /= ‖b‖``.

    Parameters
    ----------
    values : (k,) Ritz values, ascending (as :func:`ritz_vectors` returns them).
    vectors : (n, k) Ritz vectors, one per column.
    count : number of vectors to draw.
    rng : np.random.Generator or integer seed.
    smooth_fraction : fraction of the modes (lowest first) that get the larger coefficients.
    smooth_scale : their coefficient standard deviation (the others have 1).

    Returns
    -------
    float32 (count, n), each row of unit l2 norm (normalised in float64).
    """
    values = np.asarray(values)
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or values.shape != (vectors.shape[1],):
        raise ValueError(f"values (k,) and vectors (n, k) must agree; got {values.shape} and {vectors.shape}")
    if np.any(np.diff(values) < 0):
        raise ValueError("values must be ascending (smooth modes first): pass ritz_vectors' output unchanged")
    if not 0.0 <= smooth_fraction <= 1.0:
        raise ValueError(f"smooth_fraction must lie in [0, 1]; got {smooth_fraction}")
    if int(count) < 0:
        raise ValueError(f"count must be ≥ 0; got {count}")
    g = _rng(rng)
    n, k = vectors.shape
    scale = np.ones(k)
    scale[:int(round(smooth_fraction * k))] = smooth_scale
    out = np.empty((int(count), n), dtype=np.float32)
    chunk = max(1, min(1024, (1 << 24) // max(n, 1)))  # bounded float64 temporaries (≤ 128 MB)
    for start in range(0, int(count), chunk):
        c = g.standard_normal((min(chunk, int(count) - start), k)) * scale
        b = c @ vectors.T
        out[start:start + c.shape[0]] = b / np.linalg.norm(b, axis=1, keepdims=True)
    return out


def train_val_vectors(system: PoissonSystem, n_train: int, n_val: int, m: int, seed: int,
                      dense_below: int = 5000, smooth_fraction: float = 0.55,
                      smooth_scale: float = 9.0) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint training and validation sets of Ritz training vectors from one seed.

    ``SeedSequence(seed).spawn(3)`` gives three independent generators: the Ritz computation, the
    training draws and the validation draws. The validation set is therefore not a slice of the
    training set (reference pitfall 1), and changing ``n_train`` does not change the validation
    vectors. Both sets share the Ritz basis. Disjointness (no identical row) is checked.

    Parameters
    ----------
    system, m, dense_below : as :func:`ritz_vectors`.
    n_train, n_val : set sizes.
    seed : integer; the same seed gives the same sets.
    smooth_fraction, smooth_scale : as :func:`training_vectors`.

    Returns
    -------
    (train float32 (n_train, n), val float32 (n_val, n)), unit-norm rows.
    """
    ritz_g, train_g, val_g = (np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(3))
    values, vectors = ritz_vectors(system, m, ritz_g, dense_below=dense_below)
    train = training_vectors(values, vectors, n_train, train_g, smooth_fraction, smooth_scale)
    val = training_vectors(values, vectors, n_val, val_g, smooth_fraction, smooth_scale)
    seen = {row.tobytes() for row in train}
    if any(row.tobytes() in seen for row in val):  # probability zero for continuous draws; checked anyway
        raise RuntimeError("a validation vector equals a training vector; use another seed")
    return train, val

