"""One version source, recorded in checkpoints; a checkpoint from a newer major version warns on load."""
import logging
import re

import pytest
import torch

import neuropde
from neuropde import checkpoint
from tests.conftest import ROOT


def test_the_version_has_one_source():
    pyproject = (ROOT / "pyproject.toml").read_text()
    project = pyproject.split("\n[project]\n", 1)[1].split("\n[", 1)[0]
    assert 'dynamic = ["version"]' in project and 'attr = "neuropde.__version__"' in pyproject
    assert not re.search(r"^version\s*=", project, re.M)  # no second copy to fall out of step
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", neuropde.__version__)
    assert f"## {neuropde.__version__}" in (ROOT / "CHANGELOG.md").read_text()


def _checkpoint(path, version):
    torch.save({"state_dict": {"w": torch.zeros(2)}, "neuropde": {"config": {}, "version": version}}, path)
    return path


MAJOR = int(neuropde.__version__.split(".")[0])


@pytest.mark.parametrize("written, warns", [(f"{MAJOR + 1}.0.0", True), (neuropde.__version__, False),
                                            (f"{MAJOR}.0.0", False)])
def test_a_checkpoint_of_a_newer_major_version_warns(tmp_path, caplog, written, warns):
    with caplog.at_level(logging.WARNING, logger="neuropde"):
        ckpt = checkpoint.read(_checkpoint(tmp_path / "m.ckpt", written))
    assert ckpt["neuropde"]["version"] == written  # read either way: a warning, not a refusal
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if warns:
        assert len(messages) == 1 and f"neuropde {written}, a newer major version" in messages[0], messages
    else:
        assert not messages, messages


def test_a_checkpoint_without_a_version_loads_in_silence(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="neuropde"):
        checkpoint.read(_checkpoint(tmp_path / "m.ckpt", None))
    assert not caplog.records
