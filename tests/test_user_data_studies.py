"""The studies behind issue 27's and 29's figures run end to end at test sizes (``--smoke``):
experiments/user_data/same_data.py, lazy_read.py and experiments/dcdm/seeds.py."""
from __future__ import annotations

import importlib.util
import json
import math

import pytest

from tests.conftest import ROOT


def script(path: str):
    spec = importlib.util.spec_from_file_location(path.replace("/", "_")[:-3], ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_same_data_smoke(data_root, tmp_path, one_thread):
    script("experiments/user_data/same_data.py").main(["--smoke", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "same_data_smoke.json").read_text())
    assert set(result["runs"]) == {"generated", "file", "well"}
    assert all(math.isfinite(r) and r > 0 for r in (result["ratio_file"], result["ratio_well"]))


def test_lazy_read_loader_smoke(tmp_path, one_thread):
    script("experiments/user_data/lazy_read.py").main(["--smoke", "--reading-only", "--out", str(tmp_path),
                                                        "--dir", str(tmp_path / "file")])
    result = json.loads((tmp_path / "lazy_read_reading.json").read_text())
    assert result["lazy_windows_per_s"] > 0 and result["in_memory_windows_per_s"] > 0
    assert not (tmp_path / "file" / "big.h5").exists()  # the file is deleted afterwards


@pytest.mark.slow
def test_lazy_read_training_smoke(tmp_path):
    script("experiments/user_data/lazy_read.py").main(["--smoke", "--out", str(tmp_path), "--dir", str(tmp_path / "f")])
    result = json.loads((tmp_path / "lazy_read_smoke.json").read_text())
    assert result["runs"]["lazy"]["peak_rss_mb"] > 0 and math.isfinite(result["samples_per_s_ratio"])


def test_dcdm_seeds_smoke(data_root, tmp_path, one_thread):
    script("experiments/dcdm/seeds.py").main(["--smoke", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "seeds_smoke.json").read_text())
    assert len(result["runs"]) == 2 and all(r["converged"] for r in result["runs"])
