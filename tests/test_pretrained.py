"""neuropde.load in one line, pretrained folders without pickles, Lightning's load_from_checkpoint."""
from __future__ import annotations

import re

import h5py
import pytest
import torch

import neuropde
from neuropde.errors import CheckpointError, UserError
from neuropde.run import predict
from neuropde.tasks.operator import OperatorTask
from tests.conftest import compose


@pytest.fixture(scope="module")
def predicted(trained_fno, tmp_path_factory):
    """predict.py's outputs of the shared tiny FNO run: (run dir, predict dir, metrics)."""
    run, _ = trained_fno
    out = tmp_path_factory.mktemp("fno_predict")
    return run, out, predict(compose("predict", [f"ckpt={run}", f"run_dir={out}"]))


def first_window(run):
    """The first test window (x, y) of the run's data, as predict.py served it."""
    from neuropde.run import build_datamodule

    model = neuropde.load(run)
    cfg = compose("train", ["experiment=fno_tiny"])
    x, y = next(iter(build_datamodule(cfg, progress=False).predict_dataloader("test")))
    return model, x, y


def test_load_gives_the_model_predict_used(predicted):
    run, out, _ = predicted
    model, x, y = first_window(run)
    assert not model.training and next(model.parameters()).device.type == "cpu"
    with torch.no_grad():
        pred = model(x)  # physical units in and out: (B, T_in, n, n) -> (B, T_out, n, n)
    with h5py.File(out / "predictions.h5") as f:
        expected = torch.from_numpy(f["predictions"][: len(x)])
    assert pred.shape == y.shape
    torch.testing.assert_close(pred, expected, rtol=0, atol=0)


def test_save_pretrained_round_trip_is_bit_identical_and_holds_no_pickle(predicted, tmp_path):
    run, _, metrics = predicted
    model, x, _ = first_window(run)
    folder = model.save_pretrained(tmp_path / "fno-tiny")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.yaml", "model.safetensors",
                                                          "neuropde.json"]
    assert any(v.is_complex() for v in model.state_dict().values())  # spectral weights survive as pairs
    again = neuropde.load(folder)
    for k, v in model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    card = (folder / "README.md").read_text()
    assert "fno on ns2d_tiny" in card and "test/rel_l2" in card
    # predict.py takes the folder like a checkpoint, and finds the same numbers
    out = predict(compose("predict", [f"ckpt={folder}", f"run_dir={tmp_path / 'p'}"]))
    assert out["test/rel_l2"] == metrics["test/rel_l2"]
    # and it is not a run to continue: no optimizer state
    from neuropde.run import train

    with pytest.raises(UserError, match="init_from"):
        train(compose("train", ["experiment=fno_tiny", f"resume={folder}", f"run_dir={tmp_path / 'r'}"]))


def test_a_tampered_or_incomplete_folder_is_one_clear_line(predicted, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    model, _, _ = first_window(predicted[0])
    folder = model.save_pretrained(tmp_path / "m")
    weights = load_file(folder / "model.safetensors")
    name = next(k for k, v in weights.items() if k.endswith("lifting.fcs.0.weight"))
    weights[name] = torch.zeros(3, 3)
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        metadata = f.metadata()  # which tensors are complex: kept, so only the one shape is wrong
    save_file(weights, folder / "model.safetensors", metadata=metadata)
    with pytest.raises(CheckpointError, match=f"do not fit the network their config describes: .*{re.escape(name)}") as err:
        neuropde.load(folder)
    assert "\n" not in str(err.value)
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="not a safetensors file or corrupt"):
        neuropde.load(folder)
    (folder / "config.yaml").unlink()
    with pytest.raises(CheckpointError, match="config.yaml missing"):
        neuropde.load(folder)


def test_lightning_load_from_checkpoint_works(predicted):
    run = predicted[0]
    task = OperatorTask.load_from_checkpoint(run / "checkpoints" / "best.ckpt")
    assert isinstance(task, OperatorTask) and not task.training
    with pytest.raises(UserError, match="no overrides"):
        OperatorTask.load_from_checkpoint(run, lr=1.0)


def test_a_hub_id_resolves_through_huggingface_hub(predicted, tmp_path, monkeypatch):
    import sys
    import types

    model, x, _ = first_window(predicted[0])
    folder = model.save_pretrained(tmp_path / "snapshot")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # not installed
    with pytest.raises(UserError, match="pip install huggingface_hub"):
        neuropde.load("someone/fno-tiny")
    fake = types.ModuleType("huggingface_hub")
    fake.snapshot_download = lambda repo_id: str(folder) if repo_id == "someone/fno-tiny" else None
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
    with torch.no_grad():
        assert torch.equal(neuropde.load("someone/fno-tiny")(x), model(x))
