"""Options that belong to one optimizer rule stay with it (issue 30): an experiment's options for its
own rule are dropped, with a notice, under another ``optimizer=``; one typed for a rule that does
not take it is refused in one line, before any data is made."""
from __future__ import annotations

import pytest
import yaml
from torch import nn

from tests.conftest import CONF, compose, run_script

RULES = sorted(p.stem for p in (CONF / "optimizer").glob("*.yaml"))


@pytest.mark.parametrize("name", RULES)
def test_every_rule_takes_its_own_options_and_names_an_unknown_one(name):
    from neuropde.errors import UserError
    from neuropde.optim import build_optimizer, unknown_options

    cfg = yaml.safe_load((CONF / "optimizer" / f"{name}.yaml").read_text())
    assert unknown_options(cfg) == []  # what conf/optimizer/<name>.yaml sets, its factory takes
    with pytest.raises(UserError) as err:  # refused before the factory runs (no LoRA layers needed)
        build_optimizer({**cfg, "bogus_option": 1}, nn.Linear(3, 3))
    message = str(err.value)
    assert "bogus_option" in message and f"optimizer={name} ({cfg['_target_']})" in message
    assert "\n" not in message


def test_an_option_typed_for_another_rule_is_refused_and_one_from_the_experiment_is_dropped(caplog):
    from neuropde.errors import UserError
    from neuropde.optim import drop_foreign_options
    from neuropde.run import to_dict

    cfg = to_dict(compose("train", ["experiment=sdgd_pinn_quick", "optimizer=adam"]).optimizer)
    with caplog.at_level("INFO", logger="neuropde.optim"):
        assert sorted(drop_foreign_options(cfg, ["optimizer=adam"], "experiment=sdgd_pinn_quick")) == \
            ["adamw", "ns_dtype"]
    assert "optimizer.ns_dtype, set by experiment=sdgd_pinn_quick, is not an option of optimizer=adam" in caplog.text
    for typed in ("optimizer.ns_dtype=float32", "+optimizer.adamw.lr=1e-3"):
        with pytest.raises(UserError, match=r"optimizer=adam \(neuropde\.optim\.factories\.adam\) takes no option "
                                            r"(ns_dtype|adamw) \(set on the command line"):
            drop_foreign_options(cfg, ["optimizer=adam", typed])
    muon = to_dict(compose("train", ["experiment=sdgd_pinn_quick"]).optimizer)
    assert drop_foreign_options(muon, ["optimizer.ns_dtype=float32"]) == []  # muon's own option


def test_the_quick_recipe_trains_under_another_optimizer(tmp_path, one_thread):
    """experiments/sdgd/run.py's comparison run (``compose_config`` + ``train``), tiny: the experiment's
    Muon options are dropped, Adam trains, and config.yaml records what ran."""
    from neuropde.run import train

    cfg = compose("train", ["experiment=sdgd_pinn_quick", "optimizer=adam", "optimizer.lr=1e-3", "data.dim=5",
                            "model.task.batch_dims=5", "model.net.width=8", "data.steps_per_epoch=2",
                            "data.samples.val=20", "data.samples.test=20", "trainer.max_epochs=1",
                            "logger=none", "trainer.enable_progress_bar=false", f"run_dir={tmp_path}"])
    metrics = train(cfg)
    assert metrics["epochs"] == 1 and metrics["test/rel_l2"] > 0
    stored = yaml.safe_load((tmp_path / "config.yaml").read_text())["optimizer"]
    assert "ns_dtype" not in stored and "adamw" not in stored and stored["lr"] == 1e-3


def test_the_command_line_refuses_an_option_of_another_rule_in_one_line(tmp_path):
    res = run_script("train.py", "experiment=sdgd_pinn_quick", "optimizer=adam", "optimizer.ns_dtype=float32",
                     f"run_dir={tmp_path / 'run'}", cwd=tmp_path, timeout=120)
    assert res.returncode == 2, res.stderr[-2000:]
    out = (res.stdout + res.stderr).strip()
    assert "Traceback" not in out and "TypeError" not in out
    line, = [ln for ln in out.splitlines() if "ns_dtype" in ln]
    assert "optimizer=adam (neuropde.optim.factories.adam) takes no option ns_dtype" in line
    assert "optimizer.ns_dtype=float32" in line and "muon" in line
    assert not list((tmp_path / "run").glob("*"))  # refused before anything was written
