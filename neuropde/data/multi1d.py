"""The ``multi1d`` data set of multi-operator learning (LeMON, arXiv 2408.16168): trajectories of
many 1-D PDE operators, one operator being a family of :mod:`neuropde.pde.multi1d` with one draw of
its coefficients, applied to several initial conditions.

:func:`multi1d` is the generator (``data.equation: multi1d``): samples are grouped by operator, every
operator simulated as one batch, and each split is stored as named arrays (``fields``, ``family``,
``operator``, ``coefficients``, ``times``). :class:`MultiOperatorDataModule` serves them as
(initial condition → trajectory) pairs with in-context examples of the same operator, as
single-operator tasks (support / query) for meta-learning, and as few-shot sets of ONE operator.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from neuropde.data.datamodule import GeneratedDataModule
from neuropde.data.generators import ensure_generated, makes, sample_seed
from neuropde.errors import UserError
from neuropde.pde.multi1d import FAMILIES, initial_condition, sample_coefficients, simulate_family

__all__ = [
    "FAMILY_NAMES", "N_COEFFICIENTS", "ContextSampler", "MultiOperatorDataModule", "MultiOperatorSet",
    "TaskSampler", "TaskSet", "coefficient_vector", "family_coefficients", "multi1d", "operator_seeds",
    "simulate_operator",
]

# ``family`` arrays index this tuple: sorted names do not depend on any config's family list
FAMILY_NAMES: tuple[str, ...] = tuple(sorted(FAMILIES))
# width of the ``coefficients`` arrays: the most coefficients any family has (shorter rows are NaN-padded)
N_COEFFICIENTS: int = max(len(spec.nominal) for spec in FAMILIES.values())


# --- generator -------------------------------------------------------------------------------------
def operator_seeds(seed: int, split: str, operator: int) -> tuple[int, int]:
    """Seeds of operator ``operator`` of ``split``: ``(coefficients, initial conditions)``.

    The coefficient seed is :func:`~neuropde.data.generators.sample_seed` of ``(seed, split,
    operator)``; the initial conditions use a stream spawned from it, so the two are independent and
    an operator's coefficients do not change when ``ics_per_operator`` does.
    """
    base = sample_seed(int(seed), split, int(operator))
    ics = int(np.random.SeedSequence(base, spawn_key=(1,)).generate_state(1)[0])
    return base, ics


def coefficient_vector(family: str, coefficients: dict[str, float]) -> np.ndarray:
    """(:data:`N_COEFFICIENTS`,) float64: the family's coefficients in registry order, NaN-padded."""
    out = np.full(N_COEFFICIENTS, np.nan)
    values = [coefficients[key] for key in FAMILIES[family].nominal]
    out[:len(values)] = values
    return out


def family_coefficients(family_index: int, row: np.ndarray | torch.Tensor) -> tuple[str, dict[str, float]]:
    """Inverse of the stored encoding: ``(family name, {coefficient: value})`` of one sample."""
    name = FAMILY_NAMES[int(family_index)]
    return name, {key: float(row[j]) for j, key in enumerate(FAMILIES[name].nominal)}


def _check_generator_config(data_cfg: dict) -> tuple[list[str], int, float, int]:
    g = data_cfg["generator"]
    families = list(g.get("families") or [])
    if not families:
        raise UserError(f"data.generator.families is empty: list some of {', '.join(FAMILY_NAMES)}")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise UserError(f"data.generator.families has unknown families {unknown}; "
                        f"known families: {', '.join(FAMILY_NAMES)}")
    k = int(g.get("ics_per_operator", 10))
    if k < 1:
        raise UserError(f"data.generator.ics_per_operator must be at least 1, got {k}")
    spread = float(g.get("spread", 0.1))
    if not 0 <= spread < 1:
        raise UserError(f"data.generator.spread must be in [0, 1) so that coefficients stay positive, got "
                        f"{spread}; use 0.1 (in distribution), 0.3 (out of distribution) or 0 (nominal)")
    n_frames = int(g.get("n_frames", 64))
    if n_frames < 2:
        raise UserError(f"data.generator.n_frames must be at least 2 (the initial field and one target frame), "
                        f"got {n_frames}")
    for split, count in dict(data_cfg["samples"]).items():
        if int(count) % k:
            raise UserError(f"data.samples.{split}={count} is not a multiple of data.generator.ics_per_operator={k}: "
                            f"samples come in whole operators; use {max(k, int(count) // k * k)}")
    return families, k, spread, n_frames


def simulate_operator(data_cfg: dict, split: str, operator: int) -> dict:
    """Every sample of one operator of ``split``, simulated in one batch.

    Returns
    -------
    dict with ``family`` (name), ``coefficients`` (dict), ``fields`` Tensor (ics_per_operator,
    n_frames, n) float64, ``times`` ndarray (n_frames,) float64.
    """
    families, k, spread, n_frames = _check_generator_config(data_cfg)
    family = families[operator % len(families)]
    coefficient_seed, ic_seed = operator_seeds(int(data_cfg["seed"]), split, operator)
    coefficients = sample_coefficients(family, spread, torch.Generator().manual_seed(coefficient_seed))
    u0 = initial_condition(family, k, int(data_cfg["resolution"]), torch.Generator().manual_seed(ic_seed))
    fields = simulate_family(family, coefficients, u0, n_frames)
    if not torch.isfinite(fields).all():
        raise UserError(f"operator {operator} of {split} ({family}, {coefficients}) blew up: lower "
                        f"data.generator.spread or raise data.resolution")
    times = np.arange(n_frames) * FAMILIES[family].frame_dt
    return {"family": family, "coefficients": coefficients, "fields": fields, "times": times}


@makes("multi1d")
def multi1d(data_cfg: dict, split: str):
    """Generator of the ``multi1d`` data set (``data.equation: multi1d``).

    Sample ``s`` of a split belongs to operator ``o = s // ics_per_operator``, of family
    ``families[o % len(families)]`` (round robin, so every family gets operators). The operator's
    coefficients and its initial conditions come from two independent streams seeded by ``(seed,
    split, o)`` (:func:`operator_seeds`); the whole operator is simulated in one call of
    :func:`~neuropde.pde.multi1d.simulate_family` and a shard keeps the rows it needs, so a sample
    does not depend on the shard size (a shard size that is a multiple of ``ics_per_operator``
    wastes nothing; otherwise the operator cut by a shard boundary is reused from a one-entry cache).

    Config: ``resolution`` (points n), ``seed``, ``samples`` (per split, multiples of
    ``ics_per_operator``), ``generator: {families, ics_per_operator, spread, n_frames, shard_size}``.

    Returns
    -------
    ``make_shard(start, stop)`` -> dict of arrays with leading dimension ``S = stop − start``:
    ``fields`` (S, n_frames, n) float32; ``family`` (S,) int64, index into :data:`FAMILY_NAMES`;
    ``operator`` (S,) int64 = o; ``coefficients`` (S, :data:`N_COEFFICIENTS`) float64 in the family's
    registry order, NaN-padded; ``times`` (S, n_frames) float64, ``t_j = j · frame_dt`` of the family.
    """
    _, k, _, _ = _check_generator_config(data_cfg)  # fail before any work is done
    cache: dict[int, dict] = {}

    def operator_arrays(o: int) -> dict:
        if o not in cache:
            cache.clear()
            sim = simulate_operator(data_cfg, split, o)
            cache[o] = {"fields": sim["fields"].float().numpy(),
                        "family": FAMILY_NAMES.index(sim["family"]),
                        "coefficients": coefficient_vector(sim["family"], sim["coefficients"]),
                        "times": sim["times"]}
        return cache[o]

    def make_shard(start: int, stop: int) -> dict[str, np.ndarray]:
        parts = {key: [] for key in ("fields", "family", "operator", "coefficients", "times")}
        for o in range(start // k, (stop - 1) // k + 1):
            lo, hi = max(start, o * k), min(stop, (o + 1) * k)
            arrays, rows = operator_arrays(o), hi - lo
            parts["fields"].append(arrays["fields"][lo - o * k:hi - o * k])
            parts["family"].append(np.full(rows, arrays["family"], dtype=np.int64))
            parts["operator"].append(np.full(rows, o, dtype=np.int64))
            parts["coefficients"].append(np.tile(arrays["coefficients"], (rows, 1)))
            parts["times"].append(np.tile(arrays["times"], (rows, 1)))
        return {key: np.concatenate(value) for key, value in parts.items()}

    return make_shard


# --- samples with in-context examples --------------------------------------------------------------
def _groups(operator: torch.Tensor) -> list[torch.Tensor]:
    """Positions of each operator's samples, in position order, operators in first-appearance order."""
    ids, first = [], {}
    for p, o in enumerate(operator.tolist()):
        if o not in first:
            first[o] = len(ids)
            ids.append([])
        ids[first[o]].append(p)
    return [torch.tensor(members, dtype=torch.long) for members in ids]


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))


class ContextSampler(Sampler):
    """Yields ``(query position, context positions)`` keys for :class:`MultiOperatorSet`.

    The context of a query is ``n_context`` OTHER samples of its operator (never the query itself),
    repeated cyclically when the operator has fewer than ``n_context + 1`` samples. With ``shuffle``
    the query order and the contexts are drawn afresh every epoch from ``(seed, epoch)`` alone
    (Lightning calls :meth:`set_epoch`), so a resumed run sees the same batches; without it the
    queries come in order and each takes the first ``n_context`` others of its operator.

    Parameters
    ----------
    operator : Tensor (N,) int64, operator id of every sample.
    n_context : context samples per query (E ≥ 0).
    shuffle, seed : as above.
    """

    def __init__(self, operator: torch.Tensor, n_context: int, shuffle: bool, seed: int = 0):
        self.n, self.n_context, self.shuffle, self.seed, self.epoch = len(operator), int(n_context), shuffle, seed, 0
        self.groups = _groups(operator)
        if self.n_context < 0:
            raise UserError(f"data.loader.n_context must be >= 0, got {n_context}")
        lonely = [int(operator[g[0]]) for g in self.groups if len(g) < 2]
        if self.n_context and lonely:
            raise UserError(f"operators {lonely[:5]} have a single sample, so they have no context examples: "
                            f"set data.loader.n_context=0, or keep at least 2 samples per operator (data.n_shots)")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def contexts(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """(N, E) int64: the context positions of every query position."""
        out = torch.empty(self.n, self.n_context, dtype=torch.long)
        if self.n_context == 0:
            return out
        for members in self.groups:
            g = len(members)
            if generator is None:  # first others: row p skips column p
                others = torch.arange(g - 1)[None, :].expand(g, -1)
                others = others + (others >= torch.arange(g)[:, None]).long()
            else:  # a random order of the others per row: the query's own key sorts last
                keys = torch.rand(g, g, generator=generator)
                keys.fill_diagonal_(2.0)
                others = keys.argsort(dim=1)[:, :g - 1]
            cycle = torch.arange(self.n_context) % (g - 1)
            out[members] = members[others[:, cycle]]
        return out

    def __iter__(self):
        generator = _epoch_generator(self.seed, self.epoch) if self.shuffle else None
        order = torch.randperm(self.n, generator=generator) if self.shuffle else torch.arange(self.n)
        ctx = self.contexts(generator)
        return iter([(int(i), tuple(ctx[i].tolist())) for i in order])

    def __len__(self) -> int:
        return self.n


class MultiOperatorSet(Dataset):
    """Selected samples of one split; an item is ``(query position, context positions)``.

    Parameters
    ----------
    arrays : the stored arrays of a split (see :func:`multi1d`).
    index : ndarray (N,) of the sample rows selected, in the order they are served.
    context : the set whose samples context positions index (few-shot evaluation: the shots);
        default this set itself.
    """

    def __init__(self, arrays: dict[str, np.ndarray], index: np.ndarray, context: "MultiOperatorSet | None" = None):
        index = np.asarray(index, dtype=np.int64)
        self.fields = torch.from_numpy(np.ascontiguousarray(arrays["fields"][index])).float()  # (N, F, n)
        self.family = torch.from_numpy(arrays["family"][index]).long()
        self.operator = torch.from_numpy(arrays["operator"][index]).long()
        self.coefficients = torch.from_numpy(arrays["coefficients"][index]).double()
        self.times = torch.from_numpy(arrays["times"][index]).double()
        self.rows = torch.from_numpy(index)  # sample index in the stored split
        self.context_fields = self.fields if context is None else context.fields

    def __len__(self) -> int:
        return len(self.fields)

    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        if isinstance(key, (int, np.integer)):
            key = (int(key), ())
        i, ctx = key
        ctx = torch.as_tensor(ctx, dtype=torch.long)
        traj, ctx_traj = self.fields[i], self.context_fields[ctx]
        return {"u0": traj[0], "target": traj[1:], "ctx_u0": ctx_traj[:, 0], "ctx_target": ctx_traj[:, 1:],
                "family": self.family[i], "operator": self.operator[i], "coefficients": self.coefficients[i]}


# --- single-operator tasks (meta-learning) ---------------------------------------------------------
class TaskSampler(Sampler):
    """Yields one key per batch of tasks: ``(support positions (n_tasks, S), query positions (n_tasks, Q))``.

    A task is ONE operator with disjoint support and query samples. With ``shuffle`` an epoch is a
    seeded random permutation of the operators cut into ``ceil(#operators / n_tasks)`` batches (the
    last one topped up with other operators, so every batch has ``n_tasks`` distinct operators),
    and each task draws its support and query from a random order of the operator's samples.
    Without it the operators come in order (the last batch may be smaller) with support = the first
    ``n_support`` samples and query = the next ``n_query``.
    """

    def __init__(self, operator: torch.Tensor, n_tasks: int, n_support: int, n_query: int,
                 shuffle: bool, seed: int = 0):
        self.groups = _groups(operator)
        self.n_tasks, self.n_support, self.n_query = int(n_tasks), int(n_support), int(n_query)
        self.shuffle, self.seed, self.epoch = shuffle, int(seed), 0
        if self.n_tasks < 1 or self.n_support < 1 or self.n_query < 1:
            raise UserError(f"task batches need n_tasks, n_support, n_query >= 1, got {n_tasks}, {n_support}, {n_query}")
        if self.n_tasks > len(self.groups):
            raise UserError(f"n_tasks={n_tasks} but the split has {len(self.groups)} operators: lower n_tasks")
        smallest = min(len(g) for g in self.groups)
        if self.n_support + self.n_query > smallest:
            raise UserError(f"n_support + n_query = {self.n_support + self.n_query} but an operator has only "
                            f"{smallest} samples: lower them or raise data.generator.ics_per_operator")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.groups) / self.n_tasks)

    def __iter__(self):
        generator = _epoch_generator(self.seed, self.epoch) if self.shuffle else None
        n_ops = len(self.groups)
        order = torch.randperm(n_ops, generator=generator).tolist() if self.shuffle else list(range(n_ops))
        s, q = self.n_support, self.n_query
        for b in range(len(self)):
            chosen = order[b * self.n_tasks:(b + 1) * self.n_tasks]
            if self.shuffle and len(chosen) < self.n_tasks:
                chosen += [o for o in order if o not in chosen][:self.n_tasks - len(chosen)]
            support, query = [], []
            for o in chosen:
                members = self.groups[o]
                if self.shuffle:
                    members = members[torch.randperm(len(members), generator=generator)]
                support.append(members[:s])
                query.append(members[s:s + q])
            yield torch.stack(support), torch.stack(query)


class TaskSet(Dataset):
    """Batches of tasks from a :class:`MultiOperatorSet`; a key comes from :class:`TaskSampler`."""

    def __init__(self, samples: MultiOperatorSet):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def _part(self, positions: torch.Tensor) -> dict[str, torch.Tensor]:
        traj = self.samples.fields[positions]  # (n_tasks, S, F, n)
        return {"u0": traj[:, :, 0], "target": traj[:, :, 1:]}

    def __getitem__(self, key) -> dict:
        support, query = key
        first = support[:, 0]
        return {"support": self._part(support), "query": self._part(query),
                "operator": self.samples.operator[first], "family": self.samples.family[first],
                "coefficients": self.samples.coefficients[first]}


# --- data module -----------------------------------------------------------------------------------
class MultiOperatorDataModule(GeneratedDataModule):
    """Generates (when missing) and serves the ``multi1d`` data set.

    Batches (:meth:`train_dataloader`, :meth:`val_dataloader`, :meth:`test_dataloader`) are dicts:
    ``u0`` (B, n) the initial field of each query sample; ``target`` (B, T, n) its frames 1..T
    (T = n_frames − 1); ``ctx_u0`` (B, E, n) and ``ctx_target`` (B, E, T, n), E = ``loader.n_context``
    other samples of the query's operator, drawn from the same served set (see
    :class:`ContextSampler`: random per epoch for training, the first E others for evaluation);
    ``family``, ``operator`` (B,) int64; ``coefficients`` (B, C) float64 (decode a row with
    :func:`family_coefficients`). Fields are float32. Training batches are reshuffled every epoch
    from ``(seed, epoch)``; evaluation batches come in stored order. :meth:`task_dataloader` serves
    single-operator support / query tasks for meta-learning.

    Selection (top-level keys of the data config; they choose among stored samples, so changing them
    never regenerates the data as long as ``name`` and ``generator`` stay the same):

    - ``families`` (list, optional): serve only operators of these families in every split;
      default: every family of ``generator.families``.
    - ``n_shots`` (int, optional): few-shot fine-tuning on ONE operator. The operator is the
      ``shot_operator``-th (default 0: the first) operator of the training split among the selected
      families. The training set is its first ``n_shots`` samples. Validation and test evaluate the
      same operator on other initial conditions: the samples of that split whose family and
      coefficients equal the operator's when there are any (``generator.spread: 0`` makes every
      operator of a family the nominal one), otherwise — the usual case, since each split draws its
      own coefficients — the operator's remaining training-split samples (every sample of it but the
      shots). In that case validation and test are the same samples: select checkpoints on the last
      epoch, not on validation. ``ics_per_operator`` must exceed ``n_shots``. Evaluation samples
      take their context examples from the shots (the first ``n_context``), never from other
      evaluation samples: the operator is known only through its shots.

    Use case (LeMON's transfer to a new family): pretrain with ``families: [A…]``, then fine-tune
    with ``families: [B]``, ``n_shots: 10`` — ten trajectories of one operator of B — and test on
    the other trajectories of that operator.

    ``loader``: ``batch_size``, ``n_context`` (E, default 4), ``num_workers`` (default 0),
    ``tasks`` (optional ``{n_tasks, n_support, n_query}``: :meth:`train_dataloader` then serves task
    batches, for meta-training). ``stats`` = mean and standard deviation of the served training
    fields (all frames), set by :meth:`setup`.
    """

    def __init__(self, data_cfg: dict, root: str | Path, progress: bool = True, seed: int = 0):
        super().__init__(data_cfg, root, progress, seed)
        _check_generator_config(data_cfg)
        self.families = self._selected_families()
        self.n_shots = data_cfg.get("n_shots")
        if self.n_shots is not None and int(self.n_shots) < 1:
            raise UserError(f"data.n_shots must be a positive number of trajectories, got {self.n_shots}")
        self._arrays: dict[str, dict[str, np.ndarray]] = {}
        self._sets: dict[str, MultiOperatorSet] = {}

    def _selected_families(self) -> list[str]:
        available = list(dict.fromkeys(self.cfg["generator"]["families"]))
        chosen = self.cfg.get("families")
        if chosen is None:
            return available
        chosen = [chosen] if isinstance(chosen, str) else list(chosen)
        missing = [f for f in chosen if f not in available]
        if missing or not chosen:
            raise UserError(f"data.families={chosen}: {missing or 'empty'}; this data set has the families "
                            f"{', '.join(available)} (data.generator.families)")
        return chosen

    @property
    def loader_cfg(self) -> dict:
        return dict(self.cfg.get("loader") or {})

    def arrays(self, split: str) -> dict[str, np.ndarray]:
        """Every stored array of ``split``, unselected (see :func:`multi1d`)."""
        if split not in self._arrays:
            store = ensure_generated(self.cfg, self.root, splits=[split], progress=self.progress)
            self._arrays[split] = store.read_arrays(split)
        return self._arrays[split]

    def _family_rows(self, split: str) -> np.ndarray:
        wanted = [FAMILY_NAMES.index(f) for f in self.families]
        return np.flatnonzero(np.isin(self.arrays(split)["family"], wanted))

    def selection(self, split: str) -> tuple[str, np.ndarray]:
        """``(source split, rows)``: which stored samples ``split`` serves, in serving order."""
        rows = self._family_rows("train" if self.n_shots is not None else split)
        if self.n_shots is None:
            return split, rows
        train = self.arrays("train")
        operators = list(dict.fromkeys(train["operator"][rows].tolist()))
        pick = int(self.cfg.get("shot_operator", 0))
        if not 0 <= pick < len(operators):
            raise UserError(f"data.shot_operator={pick} but the training split has {len(operators)} operators of "
                            f"{self.families}: use 0..{len(operators) - 1}")
        members = rows[train["operator"][rows] == operators[pick]]
        n_shots = int(self.n_shots)
        if split == "train":
            return "train", members[:n_shots]
        family, coefficients = train["family"][members[0]], train["coefficients"][members[0]]
        other = self.arrays(split)
        equal = (other["coefficients"] == coefficients) | (np.isnan(other["coefficients"]) & np.isnan(coefficients))
        same = np.flatnonzero((other["family"] == family) & equal.all(axis=1))
        if len(same):
            return split, same
        if n_shots >= len(members):
            raise UserError(f"data.n_shots={n_shots} uses every sample of the operator "
                            f"({len(members)} = data.generator.ics_per_operator), leaving none to evaluate on: "
                            f"lower n_shots or raise ics_per_operator")
        return "train", members[n_shots:]

    def dataset(self, split: str) -> MultiOperatorSet:
        """The samples ``split`` serves (see :meth:`selection`)."""
        if split not in self._sets:
            source, rows = self.selection(split)
            # few-shot evaluation: the operator is known only through its shots, so they are the context
            shots = self.dataset("train") if self.n_shots is not None and split != "train" else None
            self._sets[split] = MultiOperatorSet(self.arrays(source), rows, context=shots)
        return self._sets[split]

    def setup(self, stage: str | None = None) -> None:
        fields = self.dataset("train").fields
        self.stats = {"mean": float(fields.mean()), "std": float(fields.std())}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        ds, ld = self.dataset(split), self.loader_cfg
        n_context = int(ld.get("n_context", 4))
        if ds.context_fields is not ds.fields:  # few-shot evaluation: every query sees the first shots
            shots = tuple(i % len(ds.context_fields) for i in range(n_context))
            sampler = [(i, shots) for i in range(len(ds))]
        else:
            sampler = ContextSampler(ds.operator, n_context, shuffle, self.seed)
        workers = int(ld.get("num_workers", 0))
        return DataLoader(ds, batch_size=int(ld.get("batch_size", 32)), sampler=sampler, num_workers=workers,
                          persistent_workers=workers > 0)

    def task_dataloader(self, split: str, n_tasks: int, n_support: int, n_query: int,
                        shuffle: bool | None = None) -> DataLoader:
        """Batches of single-operator tasks for meta-learning.

        Each batch is a dict: ``support`` and ``query``, each ``{"u0": (n_tasks, S, n), "target":
        (n_tasks, S, T, n)}`` (S = ``n_support`` or ``n_query``), disjoint samples of the same
        operator; ``operator``, ``family`` (n_tasks,) int64; ``coefficients`` (n_tasks, C) float64.
        ``shuffle`` (default: True for ``train`` only) draws the operators and the support / query
        split from ``(seed, epoch)`` (see :class:`TaskSampler`); an epoch is
        ``ceil(#operators / n_tasks)`` batches.
        """
        ds = self.dataset(split)
        shuffle = split == "train" if shuffle is None else shuffle
        sampler = TaskSampler(ds.operator, n_tasks, n_support, n_query, shuffle, self.seed)
        workers = int(self.loader_cfg.get("num_workers", 0))
        return DataLoader(TaskSet(ds), batch_size=None, sampler=sampler, num_workers=workers,
                          persistent_workers=workers > 0)

    def train_dataloader(self) -> DataLoader:
        tasks = self.loader_cfg.get("tasks")
        if tasks:
            return self.task_dataloader("train", int(tasks["n_tasks"]), int(tasks["n_support"]),
                                        int(tasks["n_query"]))
        return super().train_dataloader()
