"""Summary of a Hydra multirun: one row per job, and the mean ± std over seeds of each setting.

``python train.py -m model=fno,sfno seed=0,1,2`` writes, when the last job has returned (a Hydra
callback, ``conf/train.yaml``), into the sweep directory:

- ``summary.csv``: one row per job: its number, its overrides, ``status`` (``ok``, or ``failed``
  when it left no ``metrics.json``) and every scalar metric it reported;
- ``summary.md``: the jobs grouped by their overrides other than ``seed``: the number of runs that
  finished and that failed, and mean ± std (over seeds) of the test and validation relative L2 and
  of the seconds per epoch.

For sweeps whose jobs finish elsewhere (a cluster queue, a job rerun by hand), the same files
are rebuilt from what is on disk: ``python -m neuropde.sweep multirun/<date>/<time>``.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import sys
from pathlib import Path

import yaml
from hydra.experimental.callback import Callback

log = logging.getLogger(__name__)

# metrics shown in summary.md (all scalar metrics go to summary.csv)
HEADLINE = ("test/rel_l2", "val/rel_l2", "sec_per_epoch")


class SweepSummary(Callback):
    """Hydra callback: rewrites the summary after every job of a multirun (so a sweep cut short
    still has one) and shows it when the multirun has finished."""

    def on_job_end(self, config, job_return=None, **kwargs) -> None:
        from hydra.types import RunMode

        sweep_dir = Path(config.hydra.sweep.dir)
        if config.hydra.mode == RunMode.MULTIRUN and sweep_dir.is_dir():
            write_summary(sweep_dir)

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = collect(sweep_dir) if sweep_dir.is_dir() else []
        if rows:
            path = write_summary(sweep_dir)
            log.info("sweep summary: %s\n%s", path, path.read_text())
            failed = [r["job"] for r in rows if r["status"] == "failed"]
            if failed:
                log.warning("%d of %d jobs left no metrics (their errors are in their logs): %s",
                            len(failed), len(rows), ", ".join(failed))


def collect(sweep_dir: str | Path) -> list[dict]:
    """One dict per job directory under ``sweep_dir``: ``job`` (its directory name), ``overrides``
    (key -> value, as typed on the command line), ``status`` and its scalar ``metrics``."""
    rows = []
    for overrides_file in sorted(Path(sweep_dir).glob("*/.hydra/overrides.yaml")):
        job_dir = overrides_file.parent.parent
        overrides = {}
        for item in yaml.safe_load(overrides_file.read_text()) or []:
            key, _, value = str(item).partition("=")
            overrides[key.lstrip("+~")] = value
        metrics_file = job_dir / "metrics.json"
        try:
            metrics = json.loads(metrics_file.read_text())
        except (OSError, ValueError):
            metrics = None
        scalars = {k: v for k, v in (metrics or {}).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        rows.append({"job": job_dir.name, "overrides": overrides,
                     "status": "ok" if metrics is not None else "failed", "metrics": scalars})
    rows.sort(key=lambda r: (int(r["job"].split("_")[0]) if r["job"].split("_")[0].isdigit() else math.inf,
                             r["job"]))
    return rows


def _mean_std(values: list[float]) -> str:
    if not values:
        return "—"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.4g}"
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{mean:.4g} ± {std:.2g}"


def summary_table(rows: list[dict]) -> str:
    """Markdown: one line per setting (overrides except ``seed``), mean ± std (sample std) over its
    seeds of the :data:`HEADLINE` metrics; failed jobs are counted, not averaged."""
    keys = sorted({k for r in rows for k in r["overrides"] if k != "seed"})
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r["overrides"].get(k, "") for k in keys), []).append(r)
    shown = [m for m in HEADLINE if any(m in r["metrics"] for r in rows)]
    head = [*keys, "runs", "failed", *shown]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for setting, members in groups.items():
        ok = [r for r in members if r["status"] == "ok"]
        cells = [*setting, str(len(ok)), str(len(members) - len(ok))]
        cells += [_mean_std([r["metrics"][m] for r in ok if m in r["metrics"]]) for m in shown]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_summary(sweep_dir: str | Path) -> Path:
    """Write ``summary.csv`` and ``summary.md`` into ``sweep_dir`` (atomically); returns the .md path."""
    sweep_dir = Path(sweep_dir)
    rows = collect(sweep_dir)
    if not rows:
        raise FileNotFoundError(f"{sweep_dir} holds no Hydra job directories (*/.hydra/overrides.yaml)")
    override_keys = sorted({k for r in rows for k in r["overrides"]})
    metric_keys = sorted({k for r in rows for k in r["metrics"]})
    # per-process temporary names: parallel jobs (joblib, a cluster) may finish at the same time
    tmp = sweep_dir / f".summary.csv.{os.getpid()}.tmp"
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["job", *override_keys, "status", *metric_keys])
        for r in rows:
            writer.writerow([r["job"], *(r["overrides"].get(k, "") for k in override_keys), r["status"],
                             *(r["metrics"].get(k, "") for k in metric_keys)])
    tmp.replace(sweep_dir / "summary.csv")
    md = sweep_dir / "summary.md"
    tmp = sweep_dir / f".summary.md.{os.getpid()}.tmp"
    tmp.write_text(f"# {sweep_dir}: {len(rows)} jobs\n\n" + summary_table(rows))
    tmp.replace(md)
    return md


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m neuropde.sweep <sweep dir>   (e.g. multirun/2026-11-28/07-00-00)")
    try:
        print(write_summary(sys.argv[1]).read_text())
    except FileNotFoundError as err:
        sys.exit(str(err))
