"""Export (neuropde/export.py): ONNX graphs that onnxruntime runs to PyTorch's numbers at any batch size,
torch.export programs that load back, pretrained folders, and one-line refusals."""
from __future__ import annotations

import logging

import pytest
import torch

from neuropde.errors import UserError
from tests.conftest import compose

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(data_root, tmp_path_factory):
    """Tiny fno and sfno runs on the FFT-free layers (backend neuropde): {family: run dir}."""
    from neuropde.run import train

    out = {}
    for family, extra in (("fno", ["model.net.backend=neuropde"]), ("sfno", [])):
        d = tmp_path_factory.mktemp(f"{family}_export")
        train(compose("train", [f"experiment={family}_tiny", f"run_dir={d}", "logger=none",
                                "trainer.max_epochs=1", *extra]))
        out[family] = d
    return out


def _test_inputs(run, n):
    """n physical test inputs (B, T_in, X, Y) of the run's data, samples repeated as needed."""
    import neuropde
    from neuropde.export import sample_inputs

    x = sample_inputs(neuropde.load(run))
    return x.repeat(-(-n // x.shape[0]), 1, 1, 1)[:n]


@pytest.mark.parametrize("family", ["fno", "sfno"])
def test_onnx_matches_pytorch_in_onnxruntime(runs, family, tmp_path):
    """The acceptance check: onnxruntime gives PyTorch's output within 1e-4 (max relative error) on
    test inputs, at batch sizes the graph was not traced with, and the graph holds no FFT."""
    ort = pytest.importorskip("onnxruntime")
    import onnx

    import neuropde
    from neuropde.export import export, relative_error

    path = export(runs[family], "onnx", tmp_path / "m.onnx")
    graph = onnx.load(str(path)).graph
    assert not {"DFT", "STFT"} & {node.op_type for node in graph.node}
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a named, dynamic batch axis

    model = neuropde.load(runs[family])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 5):
        x = _test_inputs(runs[family], n)
        with torch.no_grad():
            expected = model(x)
        y = torch.from_numpy(session.run(["y"], {"x": x.numpy()})[0])
        assert y.shape == expected.shape == (n, *x.shape[1:])
        err = relative_error(y, expected)
        assert err <= 1e-4, f"{family}, batch {n}: max relative error {err:.3g}"


def test_neuralop_fno_exports_through_the_neuropde_layers(trained_fno, tmp_path, caplog):
    """A backend=neuralop checkpoint (FFT layers, batch size baked into its trace) is carried to
    FourierNet and exported; the .pt2 loads back and runs other batch sizes to PyTorch's numbers."""
    import neuropde
    from neuropde.export import export, relative_error

    run, _ = trained_fno
    model = neuropde.load(run)
    assert model.net.backend == "neuralop"
    with caplog.at_level(logging.INFO, logger="neuropde"):
        path = export(run, "torch_export", tmp_path / "fno.pt2")
    assert "carried from backend=neuralop to backend=neuropde" in caplog.text
    assert model.net.backend == "neuralop"  # the caller's model is left as it was
    program = torch.export.load(str(path)).module()
    for n in (1, 6):
        x = _test_inputs(run, n)
        with torch.no_grad():
            err = relative_error(program(x), model(x))
        assert err <= 1e-4, f"batch {n}: max relative error {err:.3g}"


def test_safetensors_writes_the_pretrained_folder(runs, tmp_path):
    import neuropde
    from neuropde.export import export

    folder = export(runs["sfno"], "safetensors", tmp_path / "sfno")
    assert {p.name for p in folder.iterdir()} >= {"model.safetensors", "config.yaml", "README.md"}
    x = _test_inputs(runs["sfno"], 2)
    with torch.no_grad():
        assert torch.equal(neuropde.load(folder)(x), neuropde.load(runs["sfno"])(x))


def _untrained(experiment):
    from neuropde.run import build_task, to_dict

    cfg = compose("train", [f"experiment={experiment}"])
    task = build_task(cfg, None)
    task.meta = {"config": to_dict(cfg)}
    return task


@pytest.mark.parametrize("experiment, says", [
    ("sdgd_pinn_tiny", "no plain tensor-to-tensor forward"),   # not an operator task
    ("mg_tfno_tiny", "factorized spectral weights"),           # an operator on FFT-only layers
])
def test_a_family_that_cannot_export_says_so_in_one_line(experiment, says, tmp_path):
    from neuropde.export import export

    with pytest.raises(UserError) as err:
        export(_untrained(experiment), "onnx", tmp_path / "m.onnx")
    message = str(err.value)
    assert "\n" not in message and says in message and "format=safetensors" in message
    assert not (tmp_path / "m.onnx").exists()


def test_the_script_config_and_its_errors(runs, tmp_path):
    """conf/export.yaml through neuropde.export.run (what export.py and neuropde-export call)."""
    from neuropde.export import run

    with pytest.raises(UserError, match="needs a checkpoint"):
        run(compose("export", ["format=onnx"]))
    with pytest.raises(UserError, match="not an export format; choose one of onnx, torch_export, safetensors"):
        run(compose("export", [f"ckpt={runs['fno']}", "format=tflite", f"out={tmp_path / 'm'}"]))
    with pytest.raises(UserError, match=r"\.pt2"):
        run(compose("export", [f"ckpt={runs['fno']}", "format=torch_export", f"out={tmp_path / 'm.onnx'}"]))
    out = run(compose("export", [f"ckpt={runs['fno']}", "format=safetensors", f"run_dir={tmp_path}"]))
    assert out == tmp_path / "pretrained" and (out / "model.safetensors").is_file()
