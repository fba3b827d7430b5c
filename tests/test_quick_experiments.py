"""Acceptance of the quick experiments (minutes each): `pytest -m slow tests/test_quick_experiments.py`."""
import pytest

from tests.conftest import CONF, compose


@pytest.mark.slow
@pytest.mark.parametrize("family", ["sfno", "fno"])
def test_quick_experiment_beats_persistence_tenfold(family, data_root, tmp_path):
    from neuropde.run import train

    metrics = train(compose("train", [f"experiment={family}_quick", f"run_dir={tmp_path}"]))
    assert metrics["test/rel_l2"] < 0.01
    assert metrics["test/rel_l2"] <= 0.1 * metrics["test/rel_l2_persistence"]


def test_every_family_has_a_quick_experiment():
    for model in (CONF / "model").glob("*.yaml"):
        assert (CONF / "experiment" / f"{model.stem}_quick.yaml").exists(), model.stem
