"""Export a trained model to run without neuropde: ONNX, a ``torch.export`` program, or a pretrained folder.

``python export.py ckpt=PATH format=onnx out=model.onnx`` (or ``neuropde-export``, or
:func:`export` from Python) writes

- ``onnx``: the physical-units forward of an operator family (normalisation included), one input
  ``x`` (B, T_in, *space) and one output ``y`` (B, T_out, *space), batch axis dynamic, the grid
  and T_out those of the data the check runs on;
- ``torch_export``: the same function as a ``torch.export`` program (``.pt2``,
  ``torch.export.load(out).module()(x)``);
- ``safetensors``: the pretrained folder of any family (``save_pretrained``: config, weights,
  model card), which ``neuropde.load`` reads.

The graphs use the project's matmul DFT (``SpectralConv(transform="dft")``: the same function as
the FFT path) so that they hold no FFT and no complex tensor, which ONNX runtimes lack; an FNO
trained with ``backend=neuralop`` is carried into the same layers first (``FourierNet.from_neuralop``,
the same network and weights). Every export is checked right away on the first batch of the test
split, at two batch sizes, in the runtime it targets (onnxruntime for ONNX), and fails when the
maximum relative error exceeds :data:`TOLERANCE`.
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import logging
import math
from pathlib import Path

import torch
from torch import Tensor, nn

from neuropde.errors import UserError

log = logging.getLogger("neuropde")

FORMATS = ("onnx", "torch_export", "safetensors")
SUFFIX = {"onnx": "model.onnx", "torch_export": "model.pt2", "safetensors": "pretrained"}
TOLERANCE = 1e-4  # max |exported - PyTorch| / max |PyTorch| on a test batch: float32 round-off is ~1e-6


class PhysicalForward(nn.Module):
    """The task's call with T_out fixed: physical x (B, T_in, *space) -> physical y (B, T_out, *space).

    A module of its own because an exported graph takes tensors only (the task's ``t_out`` argument
    is a Python int).
    """

    def __init__(self, task: nn.Module, t_out: int) -> None:
        super().__init__()
        self.task, self.t_out = task, int(t_out)
        self.carried: list[str] = []  # FNOs moved off neuraloperator's layers (see :func:`servable`)

    def forward(self, x: Tensor) -> Tensor:
        return self.task(x, self.t_out)


def export(path_or_model, format: str, out: str | Path, batch_size: int = 2, inputs: Tensor | None = None,
           split: str = "test", data_root: str | Path | None = None) -> Path:
    """Export a trained model and check the result; returns the path written.

    Parameters
    ----------
    path_or_model : a checkpoint file, run dir, pretrained folder or Hub id (:func:`neuropde.load`),
        or a task such a call returned.
    format : ``onnx`` | ``torch_export`` | ``safetensors`` (module docstring).
    out : the file (``onnx``, ``torch_export``) or folder (``safetensors``) to write.
    batch_size : samples in the example batch the graph is traced with (>= 2: a batch of one would
        be taken for a constant); the batch axis stays dynamic either way.
    inputs : physical-unit inputs (B, T_in, *space) to trace and check with; default: the first batch
        of ``split`` of the data the model was trained on (generated if missing).
    split, data_root : where that default batch comes from (``data_root`` default: the checkpoint's,
        or ``$NEUROPDE_DATASETS``).
    """
    if format not in FORMATS:
        raise UserError(f"format={format} is not an export format; choose one of {', '.join(FORMATS)}")
    task = _as_task(path_or_model)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if format == "safetensors":
        return _save_pretrained(task, out)
    if format == "torch_export" and out.suffix != ".pt2":
        raise UserError(f"out={out}: format=torch_export writes a .pt2 archive, and torch.export.load "
                        "reads only files so named; give out=<name>.pt2")
    if int(batch_size) < 2:
        raise UserError(f"batch_size={batch_size}: trace with at least 2 samples (the batch axis stays dynamic; "
                        "an example batch of one would be taken for a constant size)")
    net = servable(task, format)
    x = inputs if inputs is not None else sample_inputs(task, split, data_root)
    x = x.detach().to("cpu", torch.float32)
    example, checks = _batches(x, int(batch_size))
    device = next(iter(task.buffers())).device  # BaseTask's normaliser: where the model runs
    with torch.no_grad():  # the model as trained, not the converted copy, on its own device
        expected = [task(c.to(device), net.t_out).cpu() for c in checks]
    name = _family(task)
    try:
        run = _write(net, example, out, format)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001  an exporter's failure is this model's, said in one line
        raise UserError(f"model={name} could not be exported to {format}: {_first_line(err)}; "
                        "format=safetensors writes its pretrained folder") from err
    errors = [relative_error(torch.as_tensor(run(c)), e) for c, e in zip(checks, expected)]
    worst = max(errors)
    sizes = ", ".join(f"batch {c.shape[0]}: {e:.2e}" for c, e in zip(checks, errors))
    if not worst <= TOLERANCE:  # NaN fails too
        hint = ""
        if net.carried and any(n % 2 for n in x.shape[2:]):
            hint = ("; on an odd grid a backend=neuralop FNO runs on the grid refined by 2 (neuraloperator's "
                    "odd-size bug), which the FFT-free layers do not copy: export it on an even grid")
        out.unlink(missing_ok=True)  # a file that computes something else is worse than none
        raise UserError(f"the {format} export of model={name} does not match PyTorch: max relative error "
                        f"{worst:.3g} > {TOLERANCE:g} ({sizes}), so {out} was not kept{hint}")
    log.info("exported model=%s to %s (%s): x (batch, %s) -> y (batch, %d, %s); checked against PyTorch on %s "
             "inputs: max relative error %s", name, out, format, ", ".join(map(str, x.shape[1:])), net.t_out,
             ", ".join(map(str, x.shape[2:])), split if inputs is None else "the given", sizes)
    return out


def servable(task: nn.Module, format: str = "onnx") -> PhysicalForward:
    """A copy of an operator task's physical forward that exports: FFT-free and on the CPU.

    An FNO on neuraloperator's layers (``backend=neuralop``) becomes the same network on
    :class:`~neuropde.nn.fourier_net.FourierNet` (``backend=neuropde``), and every spectral layer
    computes its modes as matmuls (``transform="dft"``: same function, no FFT or complex op).
    Raises UserError, in one line, for a task without a tensor-to-tensor operator forward or a
    network these conversions do not cover.
    """
    from neuropde.models.fno import FNO
    from neuropde.nn.fourier_net import FourierNet
    from neuropde.nn.spectral import SpectralConv
    from neuropde.tasks.operator import OperatorTask

    name = _family(task)
    if not isinstance(task, OperatorTask):
        raise UserError(f"model={name} cannot be exported to {format}: its {type(task).__name__} has no plain "
                        f"tensor-to-tensor forward; onnx and torch_export take the operator families "
                        f"({', '.join(_operator_families())}), and format=safetensors writes any family's "
                        "pretrained folder")
    task = copy.deepcopy(task).cpu().eval()
    carried = []
    for path, module in list(task.named_modules()):
        if isinstance(module, FNO) and module.backend == "neuralop":
            try:
                module.fno = FourierNet.from_neuralop(module.fno, transform="dft")
            except ValueError as err:  # factorized weights (TFNO), domain padding, ...
                what = str(err).split(": ", 1)[-1]
                raise UserError(f"model={name} cannot be exported to {format}: its FNO ({path or 'net'}) has {what}, "
                                "which only neuraloperator's FFT layers run (the FFT-free backend=neuropde takes "
                                "dense FNOs); format=safetensors writes its pretrained folder") from None
            module.backend = "neuropde"
            carried.append(path or "net")
            log.info("export: %s carried from backend=neuralop to backend=neuropde (same weights)", path or "net")
    for module in task.modules():
        if isinstance(module, SpectralConv):
            module.transform = "dft"
    net = PhysicalForward(task, task.t_out).eval()
    net.carried = carried
    return net


def sample_inputs(task: nn.Module, split: str = "test", data_root: str | Path | None = None) -> Tensor:
    """Physical inputs x (B, T_in, *space): the first batch of ``split`` of the task's training data."""
    from omegaconf import OmegaConf

    from neuropde.run import build_datamodule, name_parts

    config = (getattr(task, "meta", None) or {}).get("config")
    if not config:
        raise UserError("this model carries no config to find its data in: export a model from neuropde.load(...) "
                        "or pass inputs=<a batch of physical inputs>")
    cfg = OmegaConf.create(config)
    name_parts(cfg)
    if data_root is not None:
        cfg.data_root = str(data_root)
    loader = build_datamodule(cfg).predict_dataloader(split)
    batch = next(iter(loader), None)
    if batch is None:
        raise UserError(f"the {split} split of data={cfg.data.get('name')} is empty: export with split=<another split>")
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def relative_error(y: Tensor, reference: Tensor) -> float:
    """max |y - reference| / max |reference|: relative to the field's scale, not per point (a field
    crosses zero, where pointwise relative errors mean nothing)."""
    y, reference = y.double(), reference.double()
    if y.shape != reference.shape:
        return math.inf
    return float((y - reference).abs().max() / reference.abs().max().clamp_min(1e-30))


def _as_task(path_or_model) -> nn.Module:
    if isinstance(path_or_model, nn.Module):
        return path_or_model.eval()
    import neuropde

    return neuropde.load(path_or_model)


def _operator_families() -> list[str]:
    """Families whose config names OperatorTask (conf/model/*.yaml): the list grows with the configs."""
    import yaml

    from neuropde import CONF_DIR

    names = []
    for path in sorted((CONF_DIR / "model").glob("*.yaml")):
        node = yaml.safe_load(path.read_text()) or {}
        if str(node.get("task", {}).get("_target_", "")).endswith("tasks.operator.OperatorTask"):
            names.append(node.get("family", path.stem))
    return names


def _family(task: nn.Module) -> str:
    config = (getattr(task, "meta", None) or {}).get("config") or {}
    return config.get("model", {}).get("family") or type(task).__name__


def _batches(x: Tensor, batch_size: int) -> tuple[Tensor, list[Tensor]]:
    """The traced example (``batch_size`` samples) and two other batch sizes to check the dynamic
    axis with (1 and ``batch_size + 1``, samples repeated where the data batch is smaller)."""
    need = batch_size + 1
    tiled = x.repeat(math.ceil(need / x.shape[0]), *[1] * (x.dim() - 1))
    return tiled[:batch_size], [tiled[:1], tiled[:need]]


def _write(net: PhysicalForward, example: Tensor, out: Path, format: str):
    """Write ``net`` traced on ``example`` with a dynamic batch axis; returns a function running
    the written file (x (B, T_in, *space) -> y (B, T_out, *space)) in its target runtime."""
    batch = {"x": {0: torch.export.Dim("batch")}}
    with _quiet():
        if format == "onnx":
            _write_onnx(net, example, out, batch)
            return _onnx_runner(out)
        program = torch.export.export(net, (example,), dynamic_shapes=batch)
        torch.export.save(program, str(out))
        loaded = torch.export.load(str(out)).module()
    return lambda x: loaded(x).detach()


@contextlib.contextmanager
def _quiet():
    """The exporters log every graph rewrite at INFO, and torch.onnx warns about torchvision ops it
    cannot register: nothing a user acts on. Their loggers say only errors while exporting."""
    loggers = [logging.getLogger(n) for n in ("onnxscript", "onnx_ir", "torch.onnx", "torch.export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _write_onnx(net: nn.Module, example: Tensor, out: Path, dynamic_shapes: dict) -> None:
    if importlib.util.find_spec("onnxscript") is None:  # torch's ONNX exporter (dynamo=True) needs it
        raise UserError("format=onnx needs the onnx and onnxscript packages (and onnxruntime to check the "
                        "result): pip install onnx onnxscript onnxruntime")
    # one self-contained file unless the weights pass protobuf's 2 GB limit
    big = sum(t.numel() * t.element_size() for t in net.state_dict().values()) > 1.5e9
    torch.onnx.export(net, (example,), str(out), dynamo=True, external_data=big, input_names=["x"],
                      output_names=["y"], dynamic_shapes=dynamic_shapes, verbose=False)


def _onnx_runner(path: Path):
    try:
        import onnxruntime
    except ImportError:
        raise UserError(f"{path} is written but not checked: the check runs it in onnxruntime "
                        "(pip install onnxruntime)") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(["y"], {"x": x.numpy()})[0])


def _save_pretrained(task: nn.Module, out: Path) -> Path:
    """``save_pretrained``, checked by reading the folder back (the same tensors, bit for bit)."""
    from neuropde.pretrained import load

    if not hasattr(task, "save_pretrained"):
        raise UserError(f"{type(task).__name__} is not a neuropde task: format=safetensors takes a model from "
                        "neuropde.load(...)")
    task.save_pretrained(out)
    own, back = task.state_dict(), load(out).state_dict()
    differ = [k for k in own if k not in back or not torch.equal(own[k].cpu(), back[k])]
    if differ or set(back) - set(own):
        raise UserError(f"the pretrained folder {out} does not read back as saved ({', '.join(differ[:3])} differ)")
    log.info("exported model=%s to %s (safetensors pretrained folder); read back identical", _family(task), out)
    return out


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def run(cfg) -> Path:
    """The script's work from its config (``conf/export.yaml``): ckpt, format, out, batch_size, split."""
    from omegaconf import OmegaConf

    from neuropde.run import run_dir

    if OmegaConf.is_missing(cfg, "ckpt"):
        raise UserError("export.py needs a checkpoint: ckpt=<run dir, checkpoint file or pretrained folder> "
                        f"format={'|'.join(FORMATS)} [out=PATH]")
    out = cfg.get("out") or run_dir(cfg) / SUFFIX.get(cfg.format, "model")
    return export(cfg.ckpt, cfg.format, out, batch_size=int(cfg.batch_size), split=cfg.split,
                  data_root=cfg.get("data_root"))
