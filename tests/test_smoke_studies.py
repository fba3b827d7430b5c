"""Every study script runs end to end: ``experiments/<study>/run.py --smoke --out DIR``.

The smoke mode takes the script's own code path (every model and variant, the results file and its
plot) at test sizes. Each runs in this process (its ``main(argv)``: one torch import for all of
them instead of one per script), on the session's data root, writing only under ``tmp_path``.
Measured on one core of the shared 2-core machine: 105 s for all eleven (lemon 19 s, phirom 14,
optimizers 13, lsm 13, sdgd 12, observer 10, equino 9, spectral_refiner 6, mg_tfno 5, dcdm 1, darcy < 1).
"""
from __future__ import annotations

import importlib.util
import json
import math

import pytest

from tests.conftest import ROOT

# study: (results files, keys in the first that must hold finite numbers (a.b: key b of a), plots)
SMOKES = {
    "darcy": (["convergence.json"], ["order_fitted", "geometric_mean_errors"], []),
    "spectral_refiner": (["results/smoke.json"], ["rel_l2", "rel_l2_refined", "rel_l2_zero_shot_256",
                                                  "rel_l2_zero_shot_256_refined", "estimate_spearman"], []),
    "dcdm": (["results/smoke.json"], ["dcdm_iters_16", "cg_iters_16", "icpcg_iters_16", "dcdm_seconds_16"], []),
    "equino": (["results/smoke.json"], ["equino_median_rel_err_sxx", "equino_median_rel_err_syy",
                                        "equino_median_rel_err_sxy", "speedup_vs_fe"], []),
    "lsm": (["results/smoke.json"], [f"{d}_{m}_{k}" for d in ("darcy", "ns2d") for k in ("rel_l2", "params")
                                     for m in ("lsm", "lsm_groupnorm", "fno", "fno_modes16")], []),
    "mg_tfno": (["results/smoke.json"], ["params", "compression", "rel_l2", "h1", "peak_mem_mb_per_call",
                                         "tucker_contraction_ms_per_call"], []),
    "observer": (["results/smoke.json", "results/smoke_gains.json"],
                 [f"{d}_{k}_final_rel_l2" for d in ("ks", "kdv") for k in ("assim", "openloop")],
                 ["results/smoke_ks_tiny.png", "results/smoke_kdv_tiny.png"]),
    "optimizers": (["results/smoke.json"], [f"rules.{r}.test_rel_l2_mean" for r in ("adamw", "muon", "auon", "hybrid_auon",
                                                                                 "root", "muon_randomized")],
                   ["results/smoke_loss.png"]),
    "phirom": (["results/smoke.json", "results/smoke_ns2d.json"],
               [f"{m}_{s}_rel_l2{o}" for m in ("phirom", "dataonly") for s in ("interp", "extrap") for o in ("", "_sparse")],
               ["results/smoke_error_vs_time.png", "results/smoke_ns2d_error_vs_time.png"]),
    "sdgd": (["results/smoke.json"], ["poisson_d100_rel_l2", "poisson_d100_adam_rel_l2", "sec_per_iter",
                                      "peak_memory_mb"], []),
    "lemon": (["results/smoke.json"], [f"heldout_{m}_rel_l2" for m in ("scratch", "finetune", "lora", "lora_all", "meta")]
              + ["by_k", "zeroshot_rel_l2", "random_subsets", "sensitivity"],
              ["results/smoke_error_vs_families.png"]),
}


def numbers(value):
    """Every number in a JSON value (bools are not numbers here)."""
    if isinstance(value, dict):
        for v in value.values():
            yield from numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from numbers(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


def test_every_study_script_has_a_smoke():
    assert sorted(p.parent.name for p in (ROOT / "experiments").glob("*/run.py")) == sorted(SMOKES)


@pytest.mark.parametrize("study", list(SMOKES))
def test_study_smoke(study, data_root, tmp_path, one_thread, monkeypatch):
    files, keys, plots = SMOKES[study]
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location(f"smoke_{study}", ROOT / "experiments" / study / "run.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--smoke", "--out", str(tmp_path)])
    for f in files:
        assert (tmp_path / f).is_file(), f"{study}: {f} not written"
    results = json.loads((tmp_path / files[0]).read_text())
    for key in keys:
        value = results
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        values = list(numbers(value))
        assert values and all(math.isfinite(v) for v in values), f"{study}: {key} = {value}"
    for f in plots:
        assert (tmp_path / f).is_file() and (tmp_path / f).stat().st_size > 1000, f"{study}: plot {f}"
    assert not (ROOT / "experiments" / study / "results" / "smoke.json").exists()
