"""Every command a user is told to type is tried.

The commands (``python train.py …``, ``predict.py …``, ``generate.py …``, ``export.py …``) are
collected from ``README.md``, ``experiments/*/README.md`` (code blocks and inline code) and the
comments of ``conf/experiment/*.yaml``. Each must be listed in ``COMMANDS`` below, as one of:

- ``RUN``: run in this process at test size, with the overrides given (its ``_tiny`` data,
  ``+trainer.fast_dev_run=1``, …); a ``<run dir>`` / ``PATH`` / ``…`` checkpoint is a tiny FNO run;
- ``COMPOSE``: its config composes (every job of a ``-m`` sweep) and, for ``train.py``, its network,
  task and optimizer are built (an option the chosen rule does not take fails here) — for commands
  that are GPU-sized or minutes long;
- ``NOT_HERE``: neither is possible on this machine; the reason says why and which test covers it.

A command documented but not listed fails ``test_every_documented_command_is_listed``: decide how
to try it. ``pytest -rs tests/test_documented_commands.py`` prints what is not run, and why.
"""
from __future__ import annotations

import itertools
import re
import shlex

import pytest

from tests.conftest import ROOT

RUN, COMPOSE, NOT_HERE = "run", "compose", "not_here"
FAST = ["+trainer.fast_dev_run=1", "logger=none"]
CKPT = "<ckpt>"  # stands for a trained tiny run's dir: experiment=fno_tiny, or sfno_tiny where a RUN entry says "sfno"

COMMANDS: dict[str, tuple] = {
    # README.md
    "python train.py model=sfno data=ns2d": (COMPOSE, "GPU job: ns2d is 1,280 trajectories solved at 256²"),
    "python predict.py ckpt=outputs/<run>/checkpoints/best.ckpt": (RUN, []),
    "python train.py experiment=sfno_quick": (RUN, ["data=ns2d_tiny", *FAST]),
    "python predict.py ckpt=<run dir>/checkpoints/best.ckpt": (RUN, ["n_plots=0"]),
    "python predict.py ckpt=<run dir> data.resolution=128": (RUN, ["data.resolution=48", "n_plots=0"]),
    "python predict.py ckpt=sfno-ns2d": (NOT_HERE, "needs a pretrained folder someone saved; "
                                         "tests/test_pretrained.py predicts from one"),
    "python export.py ckpt=outputs/<run> format=onnx out=sfno.onnx": (
        COMPOSE, "onnxruntime export of a trained run: tests/test_export.py runs it"),
    "python generate.py data=<name>": (RUN, ["data=ns2d_tiny"]),
    "python train.py experiment=fno_quick model.net.backend=neuropde": (RUN, ["data=ns2d_tiny", *FAST]),
    "python train.py model=sfno data=ns2d compile=reduce-overhead": (COMPOSE, "CUDA graphs: a GPU job"),
    "python train.py … trainer.precision=bf16-mixed": (COMPOSE, "bf16 autocast: meant for a GPU"),
    "python train.py -m model=fno,sfno seed=0,1": (COMPOSE, "four default-size (ns2d, GPU) jobs; "
                                                    "tests/test_scripts.py runs a tiny sweep"),
    "python train.py -m hydra/launcher=local_joblib model=fno,sfno": (
        COMPOSE, "parallel default-size jobs; tests/test_scripts.py checks the launcher config"),
    "python train.py -m hydra/launcher=slurm hydra.launcher.partition=gpu model=fno,sfno seed=0,1,2": (
        NOT_HERE, "needs hydra-submitit-launcher and a SLURM cluster"),
    "python train.py trainer=ddp trainer.devices=4": (COMPOSE, "4 GPUs; tests/test_scripts.py runs DDP on 2 CPU processes"),
    "python train.py -m hydra/launcher=slurm model=fno,sfno seed=0,1,2 resume=auto hydra.sweep.dir=multirun/study1": (
        NOT_HERE, "needs hydra-submitit-launcher and a SLURM cluster"),
    "python predict.py ckpt=PATH": (RUN, ["n_plots=0"]),
    "python train.py resume=<run>/checkpoints/last.ckpt": (RUN, []),  # a finished run: tested again
    "python predict.py ckpt=… refine=true [refine.steps=100 refine.lr_bias=3e-5 refine.modes=[32,32,6]]": (
        RUN, ["refine.steps=2", "refine.modes=[16,16,4]", "n_plots=0"], "sfno"),   # sfno_tiny: 32², 8 frames
    "python predict.py ckpt=… assimilate=true": (COMPOSE, "needs an observer checkpoint; tests/test_observer.py "
                                                 "assimilates with one"),
    "python train.py hydra.searchpath=[file://<dir>/conf] model=toy data=ns2d_tiny": (
        NOT_HERE, "<dir> is the user's plugin folder; tests/test_plugin_family.py runs this command with one"),
    # README.md, "Your own data": the files are the user's; tests/test_user_data.py trains on each format
    "python train.py model=fno data=file data.path=runs.npz data.keys=[u]": (COMPOSE, "the user's file"),
    "python train.py model=fno data=file data.path=ns_V1e-3_N5000_T50.mat data.keys=[u] data.layout=\"N X Y T\"": (
        COMPOSE, "the FNO benchmark's 1.8 GB download; tests/test_readers.py reads a v7.3 .mat of that layout"),
    "python train.py model=fno data=file data.path=my_runs/ data.keys=[rho,vx,vy] data.layout=\"N T X Y\"": (
        COMPOSE, "the user's files"),
    "python train.py model=fno data=file data.path=darcy.h5 data.input_key=coeff data.output_key=sol "
    "data.layout=\"N X Y\" data.periodic=false": (COMPOSE, "the user's file"),
    "python train.py model=fno data=well data.path=the_well/datasets/turbulent_radiative_layer_2D": (
        COMPOSE, "a download of The Well; tests/test_user_data.py trains on the_well's dummy files"),
    "python train.py model=fno data=pdebench data.path=2D_diff-react_NA_NA.h5": (COMPOSE, "a PDEBench download"),
    "python predict.py ckpt=outputs/… data.path=other_runs.npz": (
        NOT_HERE, "a run and a file of the user's; tests/test_user_data.py predicts on another file"),
    "python generate.py data=ns2d_small export=well": (RUN, ["data=ns2d_tiny"]),
    # experiments/*/README.md
    "python train.py experiment=fno_quick model.net.backend=…": (COMPOSE, "the same run as above with backend=neuralop"),
    "python predict.py ckpt=<dcdm run> solve.resolution=64 solve.domain=smoke_like_closed": (
        COMPOSE, "needs a DCDM checkpoint; experiments/dcdm/run.py --smoke solves with one"),
    "python train.py experiment=equino_quick": (COMPOSE, "minutes of L-BFGS; experiments/equino/run.py --smoke"),
    "python train.py experiment=equino_quick model.task.loss=data": (COMPOSE, "as above"),
    "python predict.py ckpt=<run dir>": (RUN, ["n_plots=0"]),
    "python train.py experiment=lemon_quick": (COMPOSE, "1,800 samples of 8 families; experiments/lemon/run.py --smoke"),
    "python train.py experiment=lemon_quick \"data.families=[advection,heat]\"": (COMPOSE, "as above"),
    "python train.py experiment=lemon_quick stage=meta trainer.max_steps=500": (COMPOSE, "as above"),
    "python train.py experiment=lemon_quick stage=finetune init_from=<run dir> \"data.families=[burgers]\" "
    "data.n_shots=10 data.loader.batch_size=10 scheduler=none optimizer.lr=3e-4 trainer.max_steps=-1 "
    "trainer.max_epochs=100 trainer.check_val_every_n_epoch=100 trainer.val_check_interval=1.0": (
        COMPOSE, "needs a lemon pretraining run; experiments/lemon/run.py --smoke fine-tunes from one"),
    "python train.py experiment=lemon_tiny model.net.backbone=transformer trainer.max_epochs=50": (RUN, FAST),
    "python train.py experiment=lsm_quick": (RUN, ["data=darcy_tiny", *FAST]),
    "python predict.py ckpt=<run> assimilate=true [data.measurement.fraction=0.05]": (
        COMPOSE, "needs an observer checkpoint; experiments/observer/run.py --smoke assimilates with one"),
    "python train.py experiment=phirom_quick": (COMPOSE, "minutes; experiments/phirom/run.py --smoke"),
    "python train.py experiment=phirom_quick model.task.dynamics_target=latent": (COMPOSE, "as above"),
    "python train.py experiment=phirom_quick model.task.obs_fraction=0.05": (COMPOSE, "as above"),
    "python train.py experiment=phirom_ns2d_tiny": (RUN, FAST),
    "python train.py experiment=phirom_ns2d": (COMPOSE, "GPU job (ns2d_rom at 64²)"),
    "python train.py experiment=sdgd_pinn_quick": (RUN, FAST),
    "python train.py model=sdgd_pinn data=highdim data.dim=10000 data.operator=allen_cahn": (
        COMPOSE, "10⁴ dimensions: a GPU job"),
    "python train.py experiment=sdgd_pinn_quick optimizer=adam optimizer.lr=1e-3 model.task.batch_dims=10 "
    "model.net.input_scale=sqrt_dim trainer.max_epochs=50": (RUN, FAST),
    # conf/experiment/*.yaml comments
    "python train.py experiment=phirom_ns2d model.task.dynamics_target=latent": (COMPOSE, "GPU job (ns2d_rom at 64²)"),
}
# the recipe a comment gives as overrides to add, not as a command (issue 30 began with it)
RECIPES = {"python train.py experiment=sdgd_pinn_quick optimizer=adam optimizer.lr=1e-3 model.net.input_scale=1.0":
           (RUN, FAST)}

# families whose task is built from its data module (Φ-ROM: per-trajectory parameters): composed only
NEEDS_DATA = {"phirom"}


CMD = re.compile(r"python (?:train|predict|generate|export)\.py\b[^#\n]*")


def _snippets(path):
    """Code a user is shown: yaml comments; markdown code blocks (line by line) and inline code."""
    text = path.read_text()
    if path.suffix == ".yaml":
        yield from (line.split("#", 1)[1] for line in text.splitlines() if "#" in line)
        return
    for i, part in enumerate(text.split("```")):
        if i % 2:
            yield from re.sub(r"\\\n\s*", " ", part).splitlines()
        else:
            yield from (" ".join(code.split()) for code in re.findall(r"`([^`]+)`", part))


def documented() -> dict[str, str]:
    """``{command: the first file that shows it}``."""
    files = [ROOT / "README.md", *sorted((ROOT / "experiments").glob("*/README.md")),
             *sorted((ROOT / "conf" / "experiment").glob("*.yaml"))]
    found: dict[str, str] = {}
    for path in files:
        for snippet in _snippets(path):
            for m in CMD.finditer(snippet):
                found.setdefault(" ".join(m.group(0).split()), path.relative_to(ROOT).as_posix())
    return found


def parse(command: str) -> tuple[str, list[str]]:
    """(script, overrides): placeholders of a checkpoint become ``CKPT``, ``[optional …]`` brackets go,
    ``…`` (the user's other overrides) is dropped."""
    words = shlex.split(re.sub(r"<[^>]+>", lambda m: m.group(0).replace(" ", "_"), command))
    script, args = words[1].removesuffix(".py"), []
    for w in words[2:]:
        if w in ("…", "-m"):
            continue
        if w.startswith("[") and "=" in w:
            w = w[1:]
        while w.count("]") > w.count("["):
            w = w[:-1]
        if w.startswith(("ckpt=", "init_from=", "resume=")):
            w = w.split("=", 1)[0] + "=" + CKPT
        w = w.replace("data=<name>", "data=ns2d_tiny").replace("backend=…", "backend=neuralop")
        args.append(w)
    return script, args


def with_overrides(args: list[str], extra: list[str]) -> list[str]:
    """``args`` with each key of ``extra`` replaced (a key set twice is an error to Hydra)."""
    key = lambda o: o.lstrip("+~").split("=", 1)[0]  # noqa: E731
    keys = {key(o) for o in extra}
    return [a for a in args if key(a) not in keys] + list(extra)


def sweep_jobs(args: list[str]) -> list[list[str]]:
    """The jobs of a ``-m`` command: every combination of comma-separated values (outside brackets)."""
    choices = []
    for a in args:
        name, _, value = a.partition("=")
        parts = re.split(r",(?![^\[]*\])", value) if value and not value.startswith("[") else [value]
        choices.append([f"{name}={v}" if _ else name for v in parts])
    return [list(job) for job in itertools.product(*choices)]


def compose_command(script: str, args: list[str], ckpt: str = "missing.ckpt"):
    from hydra import compose, initialize_config_dir

    from neuropde.run import CONF_DIR, compose_config

    args = [a.replace(CKPT, ckpt) for a in args]
    if any(a.startswith("hydra") for a in args):   # Hydra's own groups: compose with the hydra node
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name=script, overrides=args, return_hydra_config=True)
    return compose_config(script, args)


@pytest.fixture(scope="module")
def trained_sfno(data_root, tmp_path_factory):
    """A tiny SFNO run (for refine=true): (run_dir, metrics)."""
    from neuropde.run import compose_config, train

    out = tmp_path_factory.mktemp("sfno_run")
    return out, train(compose_config("train", ["experiment=sfno_tiny", "logger=none", f"run_dir={out}"]))


def test_every_documented_command_is_listed():
    found = documented()
    missing = {c: f for c, f in found.items() if c not in COMMANDS}
    assert not missing, f"documented commands not in COMMANDS (decide how to try them): {missing}"
    gone = set(COMMANDS) - set(found)
    assert not gone, f"COMMANDS lists commands no document shows any more: {gone}"
    assert all(isinstance(v[1], str) and v[1] for v in COMMANDS.values() if v[0] != RUN)  # every reason given
    assert "model.net.input_scale=1.0" in (ROOT / "conf" / "experiment" / "sdgd_pinn_quick.yaml").read_text()


@pytest.mark.parametrize("command", [c for c, v in COMMANDS.items() if v[0] in (RUN, COMPOSE)])
def test_documented_command_composes(command, one_thread):
    from neuropde.run import build_task, settle_optimizer_options

    script, args = parse(command)
    for job in sweep_jobs(args):
        cfg = compose_command(script, job)
        assert cfg is not None
        if script == "train" and cfg.model.get("family") not in NEEDS_DATA:
            settle_optimizer_options(cfg)   # as train() does first
            build_task(cfg, None).configure_optimizers()


@pytest.mark.parametrize("command", [c for c, v in COMMANDS.items() if v[0] == NOT_HERE])
def test_documented_command_not_run_here(command):
    pytest.skip(f"{command}: {COMMANDS[command][1]}")


@pytest.mark.parametrize("command", [c for c, v in {**COMMANDS, **RECIPES}.items() if v[0] == RUN])
def test_documented_command_runs_tiny(command, request, data_root, tmp_path, one_thread):
    from neuropde import run

    script, args = parse(command)
    _, extra, *kind = {**COMMANDS, **RECIPES}[command]
    args = with_overrides(args, [*extra, f"run_dir={tmp_path / 'run'}"] if script != "generate" else extra)
    ckpt = request.getfixturevalue("trained_sfno" if kind == ["sfno"] else "trained_fno")[0]
    cfg = compose_command(script, args, ckpt=str(ckpt))
    metrics = getattr(run, script)(cfg)
    if script in ("train", "predict"):
        rel = [v for k, v in metrics.items() if k.startswith("test/rel_l2")]
        assert rel and all(v == v for v in rel), metrics
