"""Data generators built on the solvers in :mod:`neuropde.pde`.

A data config names its generator by ``data.generator._target_`` (a function ``(data_cfg, split) ->
make_shard(start, stop)`` for :class:`DataStore`, here or in a user's own module); the rest of
``data.generator`` and ``data.equation`` make the store config that the manifest hashes.
Every sample is seeded by ``(seed, split, index)`` alone, so the same sample is the same physical
solution whatever the shard size, the device, or the stored resolution.
"""
from __future__ import annotations

import fcntl
import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from neuropde.data.store import SPLITS, DataStore
from neuropde.errors import UserError

log = logging.getLogger(__name__)

_SPLIT_ID = {"train": 0, "val": 1, "test": 2}


def sample_seed(seed: int, split: str, index: int) -> int:
    """Independent, reproducible seed of one sample."""
    return int(np.random.SeedSequence([seed, _SPLIT_ID[split], index]).generate_state(1)[0])


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def store_config(data_cfg: dict) -> dict:
    """The part of the data config that defines the files (hashed into the manifest)."""
    # where and how fast a set is made does not change it; nor does the function's import path
    gen = {k: v for k, v in data_cfg["generator"].items() if k not in ("device", "shard_size", "progress", "_target_")}
    if data_cfg["equation"] == "multi1d":  # stored family numbers index the registry: a new family regenerates
        from neuropde.pde.multi1d import FAMILIES

        gen["family_index"] = sorted(FAMILIES)
    return {"equation": data_cfg["equation"], "resolution": data_cfg["resolution"],
            "seed": data_cfg["seed"], "samples": dict(data_cfg["samples"]), "generator": gen}


def data_store(data_cfg: dict, root: str | Path) -> DataStore:
    """Data sets live in ``root/<name>/<resolution>/`` so several resolutions coexist."""
    return DataStore(Path(root) / data_cfg["name"] / str(data_cfg["resolution"]), store_config(data_cfg))


def ensure_generated(data_cfg: dict, root: str | Path, splits=SPLITS, progress: bool = True) -> DataStore:
    """Generate the splits that are missing or stale; return the store."""
    for split in splits:
        if int(data_cfg["samples"][split]) < 1:
            raise UserError(f"data.samples.{split}={data_cfg['samples'][split]}: every split needs at least one "
                            f"sample (set data.samples.{split}=1 or more)")
    resolution = data_cfg.get("resolution")
    if resolution is not None and (isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 2):
        raise UserError(f"data.resolution={resolution!r}: give the number of grid points per axis, a whole "
                        f"number of at least 2 (e.g. data.resolution=64)")
    store = data_store(data_cfg, root)
    missing = [s for s in splits if not store.is_complete(s)]
    if not missing:
        return store
    make = generator_of(data_cfg)  # a wrong name is refused before anything is written
    store.dir.mkdir(parents=True, exist_ok=True)
    # Sweep jobs sharing a data set must not generate it at the same time: one holds the lock,
    # the others wait and then find the files complete.
    with open(store.dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for split in missing:
            if store.is_complete(split):
                continue
            log.info("generating %s/%s into %s", data_cfg["name"], split, store.dir)
            make_shard = make(data_cfg, split)
            store.write_split(split, int(data_cfg["samples"][split]),
                              int(data_cfg["generator"].get("shard_size", 32)), make_shard,
                              attrs=store.config, progress=progress)
    return store


def makes(equation: str) -> Callable[[Callable], Callable]:
    """Mark a generator with the equation it solves: ``data.equation`` must name it, so that a
    data set's name for its equation (hashed into its manifest) cannot disagree with its files."""
    def mark(generator: Callable) -> Callable:
        generator.equation = equation
        return generator

    return mark


def generator_of(data_cfg: dict) -> Callable:
    """The function named by ``data.generator._target_``; one clear line when it is absent or wrong."""
    from neuropde.plugins import import_target

    target = (data_cfg.get("generator") or {}).get("_target_")
    if not target:
        raise UserError(f"data {data_cfg.get('name')} has no generator._target_, so its files cannot be made: "
                        "name a generator function (e.g. data.generator._target_=neuropde.data.generators.navier_stokes), "
                        "or give the data set's files")
    generator = import_target(target, "data.generator._target_", "the generators shipped are named in conf/data/*.yaml")
    made = getattr(generator, "equation", None)
    if made is not None and data_cfg.get("equation") != made:
        raise UserError(f"data.equation={data_cfg.get('equation')}, but the generator {target} makes {made} "
                        f"data: set data.equation={made}, or pick a data set (data=<name>) that makes yours")
    return generator


def _downsample(fields: torch.Tensor, resolution: int, ndim: int = 2) -> torch.Tensor:
    """(..., n, ..., n) -> (..., r, ..., r) on the last ``ndim`` axes: point values when r divides
    n, else Fourier resampling."""
    from neuropde.pde.spectral import fourier_resample

    n = fields.shape[-1]
    if n == resolution:
        return fields
    if n % resolution == 0:
        step = n // resolution
        return fields[(..., *[slice(None, None, step)] * ndim)]
    return fourier_resample(fields, (resolution,) * ndim)


@makes("navier_stokes")
def navier_stokes(data_cfg: dict, split: str) -> Callable[[int, int], tuple[np.ndarray, np.ndarray]]:
    """Vorticity trajectories of 2D incompressible Navier–Stokes (see :mod:`neuropde.pde.navier_stokes`)."""
    from neuropde.pde import navier_stokes as ns

    g = data_cfg["generator"]
    resolution = int(data_cfg["resolution"])
    n = max(int(g["solve_resolution"]), resolution)
    device = pick_device(g.get("device", "auto"))
    dtype = getattr(torch, g.get("solve_dtype", "float64"))
    L = float(g["L"])
    forcing = {"fno": lambda: ns.fno_forcing(n, L),
               "kolmogorov": lambda: ns.kolmogorov_forcing(n, L, k=int(g.get("kolmogorov_k", 4))),
               "none": lambda: None}
    if g["forcing"] not in forcing:
        raise ValueError(f"unknown forcing {g['forcing']!r}; choose one of {sorted(forcing)}")
    f = forcing[g["forcing"]]()
    solver = ns.NavierStokes2D(n, L=L, nu=float(g["nu"]), forcing=None if f is None else f.to(device, dtype),
                               dtype=dtype, device=device)
    record = float(g["t_warmup"]) + float(g["dt_snap"]) * np.arange(int(g["n_frames"]))

    def initial(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        if g["initial"] == "grf":
            return ns.gaussian_random_field(1, n, L=L, alpha=float(g["grf_alpha"]), tau=float(g["grf_tau"]),
                                            generator=gen, dtype=dtype, device=device)
        if g["initial"] == "mcwilliams":
            return ns.mcwilliams_vorticity(1, n, L=L, generator=gen, dtype=dtype, device=device)
        raise ValueError(f"unknown initial condition {g['initial']!r}; choose grf or mcwilliams")

    def make_shard(start: int, stop: int, progress=None):
        w0 = torch.cat([initial(sample_seed(int(data_cfg["seed"]), split, i)) for i in range(start, stop)])
        traj = solver.simulate(w0, float(g["dt"]), record.tolist(), progress=progress or False)
        return _downsample(traj, resolution).float().cpu().numpy(), record

    return make_shard


@makes("navier_stokes_forcing")
def navier_stokes_forcing(data_cfg: dict, split: str) -> Callable[[int, int], tuple[np.ndarray, np.ndarray]]:
    """Pairs forcing f ↦ vorticity ω(T) of 2D Navier–Stokes from rest (MG-TFNO's task).

    Each sample draws its own forcing, a Gaussian random field (covariance ∝ (−Δ + τ²)^(−α))
    rescaled to RMS ``forcing_rms``, and solves ∂_tω + u·∇ω = νΔω + f from ω₀ = 0 to ``t_final``.
    Stored as a 2-frame trajectory [f, ω(T)] at times [0, T]: window t_in = 1 → t_out = 1.
    """
    from neuropde.pde import navier_stokes as ns

    g = data_cfg["generator"]
    resolution = int(data_cfg["resolution"])
    n = max(int(g["solve_resolution"]), resolution)
    device = pick_device(g.get("device", "auto"))
    dtype = getattr(torch, g.get("solve_dtype", "float64"))
    L, t_final = float(g["L"]), float(g["t_final"])

    def forcing(seed: int) -> torch.Tensor:
        f = ns.gaussian_random_field(1, n, L=L, alpha=float(g["grf_alpha"]), tau=float(g["grf_tau"]),
                                     generator=torch.Generator().manual_seed(seed), dtype=dtype, device=device)
        return f * (float(g["forcing_rms"]) / f.pow(2).mean().sqrt())

    def make_shard(start: int, stop: int, progress=None):
        f = torch.cat([forcing(sample_seed(int(data_cfg["seed"]), split, i)) for i in range(start, stop)])
        solver = ns.NavierStokes2D(n, L=L, nu=float(g["nu"]), forcing=f, dtype=dtype, device=device)
        w = solver.simulate(torch.zeros_like(f), float(g["dt"]), [t_final], progress=progress or False)[:, -1]
        pair = torch.stack([f, w], dim=1)  # (shard, 2, n, n)
        return _downsample(pair, resolution).float().cpu().numpy(), np.array([0.0, t_final])

    return make_shard


def darcy_subsample_step(solve_resolution: int, resolution: int) -> int:
    """Every how many nodes the stored grid takes from the solve grid (both include the boundary).

    Node grids nest only when ``(solve − 1)`` is a multiple of ``(resolution − 1)`` (421 → 211, 141,
    106, 85, ...); anything else would need interpolation of a discontinuous field, so it is refused.
    """
    if resolution >= 2 and (solve_resolution - 1) % (resolution - 1) == 0:
        return (solve_resolution - 1) // (resolution - 1)
    valid = [(solve_resolution - 1) // d + 1 for d in range(1, solve_resolution)
             if (solve_resolution - 1) % d == 0 and (solve_resolution - 1) // d >= 2]
    raise ValueError(f"resolution {resolution} is not a subsampling of solve_resolution {solve_resolution} "
                     f"(needs (solve - 1) divisible by (resolution - 1)); valid resolutions: {valid}")


@makes("darcy")
def darcy(data_cfg: dict, split: str) -> Callable[[int, int], tuple[np.ndarray, np.ndarray]]:
    """Pairs coefficient a ↦ pressure u of steady Darcy flow −∇·(a∇u) = f, u = 0 on ∂(0,1)² (FNO benchmark).

    Each sample thresholds its own Gaussian random field (covariance ∝ (−Δ + τ²)^(−α)) to
    ``a_high`` / ``a_low`` and solves on ``solve_resolution²`` nodes (boundary included, see
    :mod:`neuropde.pde.darcy`); the stored grid takes every k-th node. Stored as a 2-frame
    trajectory [a, u] at times [0, 1], so the windowing reads it as t_in = 1 → t_out = 1.
    """
    from neuropde.pde.darcy import darcy_coefficient, solve_darcy

    g = data_cfg["generator"]
    resolution = int(data_cfg["resolution"])
    solve = int(g["solve_resolution"])
    step = darcy_subsample_step(solve, resolution)  # fail before any work is done
    params = dict(alpha=float(g["alpha"]), tau=float(g["tau"]), a_high=float(g["a_high"]), a_low=float(g["a_low"]))
    f = float(g["f"])

    def make_shard(start: int, stop: int):
        pairs = []
        for i in range(start, stop):
            a = darcy_coefficient(solve, sample_seed(int(data_cfg["seed"]), split, i), **params)
            u = solve_darcy(a, f)
            pairs.append(np.stack([a, u])[:, ::step, ::step])
        return np.stack(pairs).astype(np.float32), np.array([0.0, 1.0])

    return make_shard


def rve_solver(data_cfg: dict):
    """The FE solver of an ``equation: rve`` data set: its mesh is ``resolution`` elements per side."""
    from neuropde.pde.elasticity import RVESolver, make_rve

    g = data_cfg["generator"]
    return RVESolver(make_rve(str(g["geometry"]), int(data_cfg["resolution"]), str(g.get("element", "quad8"))))


@makes("rve")
def rve(data_cfg: dict, split: str) -> Callable[[int, int], dict]:
    """FE snapshots of a periodic RVE (:mod:`neuropde.pde.elasticity`) under macro strains.

    The split's macro strains are one Latin hypercube in [−bound, bound]³ seeded by (seed, split),
    so sample i is the same whatever the shard size. Each shard is a dict of float64 arrays:
    ``E_bar`` (n, 3), ``sigma_bar`` (n, 3), ``C_bar`` (n, 3, 3), ``u_fluct`` (n, n_nodes, 2),
    ``eps`` and ``sigma`` (n, n_ip, 3), ``iterations`` (n,).
    """
    from neuropde.pde.elasticity import latin_hypercube

    g = data_cfg["generator"]
    solver = rve_solver(data_cfg)  # fail on a bad geometry before any work is done
    strains = latin_hypercube(int(data_cfg["samples"][split]), seed=sample_seed(int(data_cfg["seed"]), split, 0),
                              bound=float(g["strain_bound"]))

    def make_shard(start: int, stop: int) -> dict:
        out = solver.solve_many(strains[start:stop], with_tangent=True, tol=float(g.get("tol", 1e-10)))
        out.pop("u")  # affine part + fluctuation: recomputed from E_bar when needed
        return out

    return make_shard


def _semilinear_1d(make_solver, make_initial) -> Callable:
    """Generator of trajectories (samples, frames, points) of a 1-D solver from neuropde.pde.etdrk4."""

    def generator(data_cfg: dict, split: str):
        g = data_cfg["generator"]
        resolution = int(data_cfg["resolution"])
        n = max(int(g["solve_resolution"]), resolution)
        device = pick_device(g.get("device", "auto"))
        solver = make_solver(g, n, device)
        record = float(g["t_warmup"]) + float(g["dt_snap"]) * np.arange(int(g["n_frames"]))

        def make_shard(start: int, stop: int):
            u0 = torch.cat([make_initial(g, n, torch.Generator().manual_seed(
                sample_seed(int(data_cfg["seed"]), split, i))) for i in range(start, stop)]).to(device)
            traj = solver.simulate(u0, float(g["dt"]), record.tolist())
            return _downsample(traj, resolution, ndim=1).float().cpu().numpy(), record

        return make_shard

    return generator


def _ks_solver(g, n, device):
    from neuropde.pde.etdrk4 import KuramotoSivashinsky

    return KuramotoSivashinsky(n, L=float(g["L"]), dtype=torch.float64, device=device)


def _ks_initial(g, n, generator):
    from neuropde.pde.etdrk4 import ks_initial_condition

    return ks_initial_condition(1, n, float(g["L"]), k_max=int(g["k_max"]), amplitude=float(g["amplitude"]),
                                generator=generator)


def _kdv_solver(g, n, device):
    from neuropde.pde.etdrk4 import KortewegDeVries

    return KortewegDeVries(n, L=float(g["L"]), delta=float(g["delta"]), dtype=torch.float64, device=device)


def _kdv_initial(g, n, generator):
    from neuropde.pde.etdrk4 import kdv_initial_condition

    return kdv_initial_condition(1, n, float(g["L"]), generator=generator)


def _burgers_solver(g, n, device):
    from neuropde.pde.burgers import Burgers1D

    return Burgers1D(n, L=float(g["L"]), nu=float(g["nu"]), dtype=torch.float64, device=device)


def _burgers_initial(g, n, generator):
    from neuropde.pde.burgers import burgers_initial_condition

    return burgers_initial_condition(1, n, float(g["L"]), generator=generator, k_max=int(g["k_max"]),
                                     amplitude=float(g["amplitude"]))


_SOLVERS_1D = {"kuramoto_sivashinsky": _ks_solver, "korteweg_de_vries": _kdv_solver, "burgers": _burgers_solver}


def solver_1d(data_cfg: dict, device="cpu"):
    """The ETDRK4 solver that made a 1-D data set, at its stored resolution (a model stepping the
    data's own discrete system needs ``solve_resolution == resolution``)."""
    equation, g = data_cfg["equation"], data_cfg["generator"]
    if equation not in _SOLVERS_1D:
        raise UserError(f"no 1-D solver for data with equation={equation}: use one of {', '.join(_SOLVERS_1D)} "
                        f"(data=burgers, ks, kdv)")
    n = int(data_cfg["resolution"])
    if int(g["solve_resolution"]) != n:
        raise UserError(f"data {data_cfg['name']} was solved at {g['solve_resolution']} points and stored at {n}: "
                        f"a solver in the loss must be the data's own, so set data.generator.solve_resolution={n}")
    return _SOLVERS_1D[equation](g, n, device)


# Kuramoto–Sivashinsky, Korteweg–de Vries and viscous Burgers trajectories (ETDRK4, float64), stored as float32.
kuramoto_sivashinsky = makes("kuramoto_sivashinsky")(_semilinear_1d(_ks_solver, _ks_initial))
korteweg_de_vries = makes("korteweg_de_vries")(_semilinear_1d(_kdv_solver, _kdv_initial))
_burgers_fixed_nu = _semilinear_1d(_burgers_solver, _burgers_initial)


def burgers_viscosities(data_cfg: dict, split: str, start: int, stop: int) -> np.ndarray:
    """ν of samples start..stop-1 of a parametric Burgers set (``generator.nu_range: [lo, hi]``):
    the training split is ``linspace(lo, hi, samples.train)`` (as the Φ-ROM reference's 8 training
    parameters), the other splits draw ν uniformly in [lo, hi] from each sample's own stream."""
    lo, hi = (float(v) for v in data_cfg["generator"]["nu_range"])
    if not 0 < lo <= hi:
        raise UserError(f"data.generator.nu_range={[lo, hi]}: give 0 < lo <= hi")
    if split == "train":
        return np.linspace(lo, hi, int(data_cfg["samples"]["train"]))[start:stop]
    return np.array([lo + (hi - lo) * torch.rand((), dtype=torch.float64, generator=torch.Generator().manual_seed(
        sample_seed(int(data_cfg["seed"]), split, i) + 1)).item() for i in range(start, stop)])


@makes("burgers")
def burgers(data_cfg: dict, split: str) -> Callable:
    """Viscous Burgers trajectories (ETDRK4, float64, stored float32). With ``generator.nu_range``
    the set is parametric: one viscosity per sample (:func:`burgers_viscosities`), stored as ``nu``
    (samples,) beside ``fields`` and ``times`` (samples, frames); with ``generator.fixed_ic: true``
    every sample starts from the same field, drawn from the data seed (the reference's setting, in
    which the parameter alone sets the trajectory)."""
    g = data_cfg["generator"]
    if g.get("nu_range") is None:
        if g.get("fixed_ic"):
            raise UserError("data.generator.fixed_ic=true needs data.generator.nu_range: with one viscosity "
                            "every trajectory would be the same")
        return _burgers_fixed_nu(data_cfg, split)
    from neuropde.pde.burgers import Burgers1D

    resolution = int(data_cfg["resolution"])
    n = max(int(g["solve_resolution"]), resolution)
    device = pick_device(g.get("device", "auto"))
    record = float(g["t_warmup"]) + float(g["dt_snap"]) * np.arange(int(g["n_frames"]))

    def make_shard(start: int, stop: int):
        nu = burgers_viscosities(data_cfg, split, start, stop)
        seeds = [int(data_cfg["seed"]) if g.get("fixed_ic") else sample_seed(int(data_cfg["seed"]), split, i)
                 for i in range(start, stop)]
        u0 = torch.cat([_burgers_initial(g, n, torch.Generator().manual_seed(s)) for s in seeds]).to(device)
        solver = Burgers1D(n, L=float(g["L"]), nu=torch.from_numpy(nu), dtype=torch.float64, device=device)
        traj = _downsample(solver.simulate(u0, float(g["dt"]), record.tolist()), resolution, ndim=1)
        return {"fields": traj.float().cpu().numpy(), "times": np.tile(record, (stop - start, 1)), "nu": nu}

    return make_shard


@makes("poisson_ritz")
def poisson_ritz(data_cfg: dict, split: str) -> Callable[[int, int], tuple[np.ndarray, np.ndarray]]:
    """Unit right-hand sides b = Σ c_k v_k from Ritz vectors v_k of a pressure-Poisson matrix
    (DCDM's training data, :mod:`neuropde.pde.ritz`), stored on the grid as one frame per sample:
    (samples, 1, N, N[, N]), zero outside the fluid. The Ritz basis depends on the matrix and the
    seed only; each sample draws its coefficients from its own (seed, split, index) stream, so the
    splits are disjoint and a sample does not depend on the shard size."""
    from neuropde.pde.poisson import assemble, make_domain
    from neuropde.pde.ritz import ritz_vectors, training_vectors

    g = data_cfg["generator"]
    N, dim, seed = int(data_cfg["resolution"]), int(g["dim"]), int(data_cfg["seed"])
    system = assemble(make_domain(str(g["domain"]), N, dim, seed, int(g.get("n_obstacles", 4))))
    basis = {}

    def make_shard(start: int, stop: int):
        if not basis:  # once per split, when a shard is actually needed
            basis["values"], basis["vectors"] = ritz_vectors(system, int(g["ritz_m"]), np.random.default_rng(seed),
                                                             dense_below=int(g["dense_below"]))
        b = np.concatenate([training_vectors(basis["values"], basis["vectors"], 1,
                                             np.random.default_rng(sample_seed(seed, split, i)),
                                             smooth_fraction=float(g["smooth_fraction"]),
                                             smooth_scale=float(g["smooth_scale"])) for i in range(start, stop)])
        return system.to_grid(b)[:, None].astype(np.float32), np.zeros(1)

    return make_shard

