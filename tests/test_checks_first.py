"""Every user error is refused before the expensive work (issue 29): each bad command below fails
with a one-line UserError while the data root is still empty, i.e. before any data set is made."""
from __future__ import annotations

import pytest

from neuropde.errors import UserError
from tests.conftest import compose


def corrupt(tmp_path):
    bad = tmp_path / "broken.ckpt"
    bad.write_bytes(b"not a checkpoint")
    return str(bad)


CASES = {
    "unknown trainer option": (["+trainer.max_epoch=3"], "max_epoch"),
    "model does not take the data": (["model=sfno", "data=ks_tiny"], "does not take data=ks_tiny"),
    "bad model option": (["model.net.backend=jax"], "backend"),
    "missing init_from": (["init_from=/nowhere/best.ckpt"], "not found"),
    "corrupt init_from": (["init_from={corrupt}"], "corrupt"),
    "missing resume": (["resume=/nowhere/last.ckpt"], "not found"),
    "resume and init_from": (["resume=/a.ckpt", "init_from=/b.ckpt"], "only one"),
    "missing logger package": (["logger=mlflow"], "mlflow"),
    "optimizer option of another rule": (["optimizer=adam", "+optimizer.ns_dtype=float32"], "ns_dtype"),
    "compile mode": (["compile=fastest"], "compile=fastest"),
    "user file missing": (["data=file", "data.path=/nowhere/u.npz"], "nowhere"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refused_before_any_data_is_made(case, tmp_path, monkeypatch):
    from neuropde.run import train

    if case == "missing logger package":
        import importlib.util

        if importlib.util.find_spec("mlflow") is not None:  # the case needs mlflow absent
            pytest.skip("mlflow is installed here")
    if case == "optimizer option of another rule":
        # what the user typed is read from Hydra's command line: here as train.py would see it
        monkeypatch.setattr("neuropde.checks.command_line_overrides", lambda: ["+optimizer.ns_dtype=float32"])
    root = tmp_path / "datasets"
    monkeypatch.setenv("NEUROPDE_DATASETS", str(root))
    overrides, match = CASES[case]
    overrides = [o.replace("{corrupt}", corrupt(tmp_path)) for o in overrides]
    cfg = compose("train", ["experiment=fno_tiny", *overrides, f"run_dir={tmp_path / 'run'}"])
    with pytest.raises(UserError, match=match) as err:
        train(cfg)
    assert "\n" not in str(err.value)
    assert not root.exists() or not any(root.iterdir()), "a data set was made before the refusal"
    assert not (tmp_path / "run" / "checkpoints").exists()
