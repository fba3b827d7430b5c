"""Checkpoints written before issue 25's refactor still load and predict the same numbers.

The fixtures (tests/fixtures/checkpoints_14c7747/, see its README) cover the generic operator
prediction (fno), and three families that predict their own way: a PINN (sdgd_pinn), an
auto-decoder with its own data module (phirom) and observer assimilation (observer).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from neuropde.run import predict
from tests.conftest import compose

FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints_14c7747"
EXPECTED = json.loads((FIXTURES / "expected_metrics.json").read_text())


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_checkpoint_from_before_the_refactor_predicts_as_it_did(family, data_root, tmp_path, one_thread):
    extra = ["assimilate=true"] if family == "observer" else []
    metrics = predict(compose("predict", [f"ckpt={FIXTURES / family}.ckpt", f"run_dir={tmp_path}"] + extra))
    for key, value in EXPECTED[family].items():
        assert metrics[key] == pytest.approx(value, rel=1e-3), key
    assert (tmp_path / ("assimilation.h5" if family == "observer" else "predictions.h5")).exists()
