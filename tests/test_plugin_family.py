"""A family added from outside the package: its task, its model and its config file live in a
directory of their own (here the test's), reach Hydra through ``hydra.searchpath`` and Python
through ``PYTHONPATH``, and train and predict through ``train.py`` / ``predict.py`` unchanged."""
from __future__ import annotations

import json
import textwrap

import h5py

from tests.conftest import ROOT, run_script

TOY_MODULE = '''
"""A toy family: every output frame is a learned affine map of the last input frame."""
import torch
from torch import nn

from neuropde.losses import rel_l2
from neuropde.tasks.base import BaseTask
from neuropde.tasks.prediction import write_outputs


class LastFrameAffine(nn.Module):
    """(B, T_in, *space) -> (B, t_out, *space): a_t * x[:, -1] + b_t."""

    def __init__(self, t_out: int):
        super().__init__()
        self.a, self.b = nn.Parameter(torch.zeros(t_out)), nn.Parameter(torch.zeros(t_out))

    def forward(self, x, t_out):
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return self.a[:t_out].view(shape) * x[:, -1:] + self.b[:t_out].view(shape)


class ToyTask(BaseTask):
    def __init__(self, net, t_out, optimizer, scheduler=None, stats=None):
        super().__init__(optimizer, scheduler, stats)
        self.net, self.t_out = net, int(t_out)

    def forward(self, x, t_out=None):
        return self.denormalize(self.net(self.normalize(x), t_out or self.t_out))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = rel_l2(self(x, y.shape[1]), y)
        self.log("train/loss", loss, batch_size=x.shape[0])
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/rel_l2", rel_l2(self(x, y.shape[1]), y), batch_size=x.shape[0])

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test/rel_l2", rel_l2(self(x, y.shape[1]), y), batch_size=x.shape[0])

    def predict_split(self, datamodule, split, out, options):
        """Its own prediction: the windows' error, and the learned coefficients."""
        errors = []
        with torch.no_grad():
            for x, y in datamodule.predict_dataloader(split):
                errors.append(rel_l2(self(x, y.shape[1]), y, reduce=False))
        errors = torch.cat(errors)
        metrics = {f"{split}/rel_l2": float(errors.mean()), "predicted_by": type(self).__name__}
        write_outputs(out, metrics, {"rel_l2_per_window": errors, "a": self.net.a.detach()})
        return metrics
'''

TOY_CONFIG = '''
family: toy
data_kinds: [trajectory2d]
net:
  _target_: toyfam.LastFrameAffine
  t_out: ${data.window.t_out}
task:
  _target_: toyfam.ToyTask
  t_out: ${data.window.t_out}
'''


def test_a_family_from_outside_the_package_trains_and_predicts(data_root, tmp_path):
    plugin = tmp_path / "plugin"
    (plugin / "toyfam").mkdir(parents=True)
    (plugin / "toyfam" / "__init__.py").write_text(textwrap.dedent(TOY_MODULE))
    (plugin / "conf" / "model").mkdir(parents=True)
    (plugin / "conf" / "model" / "toy.yaml").write_text(textwrap.dedent(TOY_CONFIG))
    env = {"PYTHONPATH": f"{ROOT}:{plugin}", "NEUROPDE_DATASETS": str(data_root)}
    run, pred = tmp_path / "run", tmp_path / "pred"

    res = run_script("train.py", f"hydra.searchpath=[file://{plugin / 'conf'}]", "model=toy", "data=ns2d_tiny",
                     "trainer=cpu", "trainer.max_epochs=4", "scheduler=none", "optimizer.lr=0.1", "logger=none", f"run_dir={run}",
                     cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    trained = json.loads((run / "metrics.json").read_text())
    assert trained["test/rel_l2"] < 0.5  # a = b = 0 predicts the data mean (error ~1): it learned

    res = run_script("predict.py", f"ckpt={run}", f"run_dir={pred}", cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((pred / "metrics.json").read_text())
    assert metrics["predicted_by"] == "ToyTask"  # its own predict_split, not the base one
    assert abs(metrics["test/rel_l2"] - trained["test/rel_l2"]) < 1e-4  # same windows, same weights
    with h5py.File(pred / "predictions.h5") as f:
        assert f["a"].shape == (4,) and abs(f["a"][:]).max() > 0
