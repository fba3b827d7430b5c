"""Tests of the ``multi1d`` data set (neuropde.data.multi1d): the generator reproduces each operator
from its seeds whatever the shard size, in-context examples share the query's operator without
being the query, few-shot selection keeps one operator, task batches are single-operator with
disjoint support and query, and bad configs fail with a message that names the fix (CPU, tiny)."""
import math

import numpy as np
import pytest
import torch

from neuropde.data import generators
from neuropde.data.multi1d import (
    FAMILY_NAMES,
    N_COEFFICIENTS,
    MultiOperatorDataModule,
    family_coefficients,
    multi1d,
    operator_seeds,
)
from neuropde.errors import UserError
from neuropde.pde.multi1d import FAMILIES, initial_condition, sample_coefficients, simulate_family

pytestmark = pytest.mark.usefixtures("one_thread")

K = 6  # initial conditions per operator
FAMILY_LIST = ["heat", "fisher_kpp", "burgers"]  # fisher_kpp has two coefficients: the others are NaN-padded


def make_config(**generator):
    cfg = {"name": "multi1d_test", "equation": "multi1d", "resolution": 32, "seed": 3,
           "samples": {"train": 6 * K, "val": 3 * K, "test": 3 * K},
           "generator": {"_target_": "neuropde.data.multi1d.multi1d", "families": list(FAMILY_LIST),
                         "ics_per_operator": K, "spread": 0.1, "n_frames": 5,
                         "shard_size": 2 * K},
           "loader": {"batch_size": 5, "n_context": 2, "num_workers": 0}}
    cfg["generator"].update(generator)
    return cfg


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi1d")
    generators.ensure_generated(make_config(), root, progress=False)
    return root


def module(root, **selection):
    cfg = make_config()
    loader = selection.pop("loader", {})
    cfg["loader"].update(loader)
    cfg.update(selection)
    dm = MultiOperatorDataModule(cfg, root, progress=False, seed=7)
    dm.setup("fit")
    return dm


def whole(make_shard, n, shard_size):
    parts = [make_shard(start, min(start + shard_size, n)) for start in range(0, n, shard_size)]
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def position(fields: torch.Tensor, u0: torch.Tensor) -> int:
    """The position of the sample whose initial field is ``u0`` (initial fields are distinct)."""
    hits = torch.nonzero((fields[:, 0] == u0).all(-1)).flatten()
    assert len(hits) == 1
    return int(hits[0])


# --- generator -------------------------------------------------------------------------------------
def test_samples_do_not_depend_on_the_shard_size():
    cfg = make_config()
    n = cfg["samples"]["val"]
    one = whole(multi1d(cfg, "val"), n, n)
    for shard_size in (K, 5, 1):  # 5 and 1 cut operators across shards
        other = whole(multi1d(cfg, "val"), n, shard_size)
        assert other.keys() == one.keys()
        for key in one:
            np.testing.assert_array_equal(other[key], one[key], err_msg=f"{key} at shard size {shard_size}")


def test_arrays_layout_and_every_sample_is_its_operators_simulation(root):
    cfg = make_config()
    arrays = generators.data_store(cfg, root).read_arrays("train")
    S, F, n = 6 * K, cfg["generator"]["n_frames"], cfg["resolution"]
    assert arrays["fields"].shape == (S, F, n) and arrays["fields"].dtype == np.float32
    assert arrays["family"].dtype == np.int64 and arrays["operator"].dtype == np.int64
    assert arrays["coefficients"].shape == (S, N_COEFFICIENTS) and arrays["coefficients"].dtype == np.float64
    assert arrays["times"].shape == (S, F) and arrays["times"].dtype == np.float64
    np.testing.assert_array_equal(arrays["operator"], np.arange(S) // K)

    for o in range(S // K):
        rows = slice(o * K, (o + 1) * K)
        assert len(set(arrays["family"][rows])) == 1
        np.testing.assert_array_equal(arrays["coefficients"][rows], np.tile(arrays["coefficients"][o * K], (K, 1)))
        name, q = family_coefficients(arrays["family"][o * K], arrays["coefficients"][o * K])
        assert name == FAMILY_LIST[o % len(FAMILY_LIST)]  # round robin
        assert np.isnan(arrays["coefficients"][o * K, len(q):]).all()
        coefficient_seed, ic_seed = operator_seeds(cfg["seed"], "train", o)
        assert q == sample_coefficients(name, 0.1, torch.Generator().manual_seed(coefficient_seed))
        for key, value in q.items():
            assert abs(value / FAMILIES[name].nominal[key] - 1) <= 0.1
        u0 = initial_condition(name, K, n, torch.Generator().manual_seed(ic_seed))
        direct = simulate_family(name, q, u0, F).float().numpy()
        # equal up to float32 rounding: multi-threaded FFTs may differ in the last bit between calls
        np.testing.assert_allclose(arrays["fields"][rows], direct, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(arrays["times"][rows], np.tile(np.arange(F) * FAMILIES[name].frame_dt, (K, 1)))
        # the stored trajectory also follows from its stored (rounded) initial field
        again = simulate_family(name, q, torch.from_numpy(arrays["fields"][rows, 0]).double(), F)
        torch.testing.assert_close(again.float(), torch.from_numpy(arrays["fields"][rows]), rtol=1e-5, atol=1e-5)
    # operators of one family differ, and the splits draw their own operators
    coefficients = arrays["coefficients"][::K, 0]
    assert len(set(coefficients.tolist())) == S // K
    val = generators.data_store(cfg, root).read_arrays("val")
    assert not np.isin(val["coefficients"][:, 0], coefficients).any()


def test_generator_errors_name_the_fix():
    with pytest.raises(UserError, match="known families: .*advection"):
        multi1d(make_config(families=["heat", "navier_stokes"]), "train")
    with pytest.raises(UserError, match="not a multiple of data.generator.ics_per_operator"):
        multi1d(make_config(ics_per_operator=5), "train")
    for spread in (1.0, -0.1):
        with pytest.raises(UserError, match=r"spread must be in \[0, 1\)"):
            multi1d(make_config(spread=spread), "train")
    with pytest.raises(UserError, match="n_frames"):
        multi1d(make_config(n_frames=1), "train")


# --- data module -----------------------------------------------------------------------------------
def test_batches_and_stats(root):
    dm = module(root)
    train = dm.dataset("train")
    assert dm.stats == pytest.approx({"mean": float(train.fields.mean()), "std": float(train.fields.std())})
    batch = next(iter(dm.train_dataloader()))
    B, E, T, n = 5, 2, 4, 32
    shapes = {"u0": (B, n), "target": (B, T, n), "ctx_u0": (B, E, n), "ctx_target": (B, E, T, n),
              "family": (B,), "operator": (B,), "coefficients": (B, N_COEFFICIENTS)}
    assert {k: tuple(v.shape) for k, v in batch.items()} == shapes
    assert batch["u0"].dtype == batch["ctx_target"].dtype == torch.float32
    assert batch["family"].dtype == batch["operator"].dtype == torch.int64
    assert batch["coefficients"].dtype == torch.float64


@pytest.mark.parametrize("n_context", [2, 8])  # 8 > the 5 others: they repeat
def test_context_shares_the_operator_and_is_never_the_query(root, n_context):
    dm = module(root, loader={"n_context": n_context})
    for split, loader in [("train", dm.train_dataloader()), ("val", dm.val_dataloader())]:
        ds = dm.dataset(split)
        queries = []
        for batch in loader:
            for b in range(len(batch["u0"])):
                i = position(ds.fields, batch["u0"][b])
                queries.append(i)
                assert torch.equal(batch["target"][b], ds.fields[i, 1:])
                assert batch["operator"][b] == ds.operator[i] and batch["family"][b] == ds.family[i]
                ctx = [position(ds.fields, u) for u in batch["ctx_u0"][b]]
                assert i not in ctx
                assert all(ds.operator[j] == ds.operator[i] for j in ctx)
                assert torch.equal(batch["ctx_target"][b], ds.fields[ctx, 1:])
                others = min(n_context, K - 1)
                assert len(set(ctx)) == others  # distinct until the others run out, then repeated
                if split == "val":  # deterministic: the first others of the operator
                    members = torch.nonzero(ds.operator == ds.operator[i]).flatten().tolist()
                    first = [j for j in members if j != i]
                    assert ctx == [first[e % len(first)] for e in range(n_context)]
        assert sorted(queries) == list(range(len(ds)))  # every sample once per epoch
        if split == "val":
            assert queries == list(range(len(ds)))  # ordered


def test_training_order_is_reshuffled_per_epoch_and_reproducible(root):
    def epoch_keys(epoch):
        loader = module(root).train_dataloader()
        loader.sampler.set_epoch(epoch)
        return list(loader.sampler)

    assert epoch_keys(0) == epoch_keys(0)
    assert epoch_keys(0) != epoch_keys(1)
    assert [i for i, _ in epoch_keys(0)] != list(range(6 * K))


def test_family_selection(root):
    dm = module(root, families=["fisher_kpp"])
    for split in ("train", "val", "test"):
        ds = dm.dataset(split)
        assert len(ds) > 0 and set(ds.family.tolist()) == {FAMILY_NAMES.index("fisher_kpp")}
    with pytest.raises(UserError, match="heat, fisher_kpp, burgers"):
        module(root, families=["kdv"])


@pytest.mark.parametrize("shot_operator, operator", [(0, 2), (1, 5)])  # the burgers operators of train
def test_few_shot_selects_one_operator_and_evaluates_on_its_other_samples(root, shot_operator, operator):
    dm = module(root, families=["burgers"], n_shots=2, shot_operator=shot_operator)
    train, val, test = (dm.dataset(s) for s in ("train", "val", "test"))
    assert len(train) == 2 and set(train.operator.tolist()) == {operator}
    assert train.rows.tolist() == [operator * K, operator * K + 1]  # the first n_shots samples
    assert dm.selection("val")[0] == dm.selection("test")[0] == "train"  # the split draws its own operators
    for ds in (val, test):
        assert set(ds.operator.tolist()) == {operator} and len(ds) == K - 2
        assert not set(ds.rows.tolist()) & set(train.rows.tolist())
        assert set(ds.rows.tolist()) | set(train.rows.tolist()) == set(range(operator * K, (operator + 1) * K))
        torch.testing.assert_close(ds.coefficients, train.coefficients[:1].expand(len(ds), -1), rtol=0, atol=0,
                                   equal_nan=True)
    assert dm.stats["mean"] == pytest.approx(float(train.fields.mean()))
    assert len(next(iter(dm.train_dataloader()))["u0"]) == 2
    batch = next(iter(dm.test_dataloader()))  # the operator is known through its shots only
    E = batch["ctx_u0"].shape[1]
    expected = train.fields[[e % 2 for e in range(E)]]
    for b in range(len(batch["u0"])):
        torch.testing.assert_close(batch["ctx_u0"][b], expected[:, 0])
        torch.testing.assert_close(batch["ctx_target"][b], expected[:, 1:])

    with pytest.raises(UserError, match="leaving none to evaluate"):
        module(root, families=["burgers"], n_shots=K).dataset("val")
    with pytest.raises(UserError, match="single sample"):
        module(root, families=["burgers"], n_shots=1).train_dataloader()
    with pytest.raises(UserError, match="shot_operator"):
        module(root, families=["burgers"], n_shots=2, shot_operator=2).dataset("train")


def test_few_shot_evaluates_on_the_same_operator_in_the_evaluation_split(tmp_path):
    """With spread 0 every operator of a family is the nominal one, so val/test hold it too."""
    cfg = make_config(spread=0.0, families=["heat", "advection"])
    cfg.update(families=["advection"], n_shots=3)
    dm = MultiOperatorDataModule(cfg, tmp_path, progress=False)
    train = dm.dataset("train")
    assert len(train) == 3 and train.operator.unique().tolist() == [1]
    for split in ("val", "test"):
        source, rows = dm.selection(split)
        assert source == split
        arrays = dm.arrays(split)
        np.testing.assert_array_equal(rows, np.flatnonzero(arrays["family"] == FAMILY_NAMES.index("advection")))
        assert torch.equal(dm.dataset(split).coefficients[:, 0], torch.full((len(rows),), 0.5, dtype=torch.float64))


def test_task_batches_are_single_operator_with_disjoint_support_and_query(root):
    dm = module(root)
    ds = dm.dataset("train")
    loader = dm.task_dataloader("train", n_tasks=4, n_support=2, n_query=3)
    assert len(loader) == math.ceil(6 / 4)
    loader.sampler.set_epoch(0)
    batches = list(loader)
    assert len(batches) == 2
    seen = set()
    for batch in batches:
        assert batch["support"]["u0"].shape == (4, 2, 32) and batch["support"]["target"].shape == (4, 2, 4, 32)
        assert batch["query"]["u0"].shape == (4, 3, 32) and batch["query"]["target"].shape == (4, 3, 4, 32)
        assert batch["operator"].shape == batch["family"].shape == (4,)
        assert len(set(batch["operator"].tolist())) == 4  # distinct operators, also in the topped-up last batch
        for t in range(4):
            support = [position(ds.fields, u) for u in batch["support"]["u0"][t]]
            query = [position(ds.fields, u) for u in batch["query"]["u0"][t]]
            assert not set(support) & set(query) and len(set(support + query)) == 5
            for part, positions in (("support", support), ("query", query)):
                assert torch.equal(batch[part]["target"][t], ds.fields[positions, 1:])
            assert {int(ds.operator[j]) for j in support + query} == {int(batch["operator"][t])}
            assert all(ds.family[j] == batch["family"][t] for j in support)
        seen |= set(batch["operator"].tolist())
    assert seen == set(range(6))  # one epoch covers every operator

    def operators(epoch):
        loader.sampler.set_epoch(epoch)
        return [b["operator"].tolist() for b in loader]

    assert operators(3) == operators(3) and operators(3) != operators(4)

    evaluation = list(dm.task_dataloader("val", n_tasks=2, n_support=2, n_query=4))
    val = dm.dataset("val")
    assert [b["operator"].tolist() for b in evaluation] == [[0, 1], [2]]  # in order, last batch smaller
    first = evaluation[0]
    assert torch.equal(first["support"]["u0"][0], val.fields[0:2, 0])
    assert torch.equal(first["query"]["u0"][0], val.fields[2:6, 0])

    with pytest.raises(UserError, match="n_support \\+ n_query"):
        dm.task_dataloader("train", n_tasks=2, n_support=3, n_query=4)
    with pytest.raises(UserError, match="operators"):
        dm.task_dataloader("train", n_tasks=7, n_support=2, n_query=2)


def test_task_batches_from_the_loader_config(root):
    dm = module(root, loader={"tasks": {"n_tasks": 2, "n_support": 2, "n_query": 2}})
    batch = next(iter(dm.train_dataloader()))
    assert batch["support"]["u0"].shape == (2, 2, 32) and batch["operator"].shape == (2,)
