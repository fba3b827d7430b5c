"""Sweep summaries: rows per job, failed jobs counted, mean ± std over seeds per setting."""
import json

import pytest

from neuropde.sweep import collect, write_summary


def fake_job(root, num, overrides, metrics):
    job = root / (f"{num}_" + ",".join(overrides))
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))


def test_summary_groups_seeds_and_counts_failures(tmp_path):
    fake_job(tmp_path, 0, ["model=fno", "seed=0"], {"test/rel_l2": 0.1, "val/rel_l2": 0.2, "best_ckpt": "x"})
    fake_job(tmp_path, 1, ["model=fno", "seed=1"], {"test/rel_l2": 0.3, "val/rel_l2": 0.2})
    fake_job(tmp_path, 2, ["model=sfno", "seed=0"], {"test/rel_l2": 0.05})
    fake_job(tmp_path, 3, ["model=sfno", "seed=1"], None)  # crashed: no metrics.json
    fake_job(tmp_path, 10, ["model=sfno", "seed=2"], {"test/rel_l2": 0.07})
    rows = collect(tmp_path)
    assert [r["job"].split("_")[0] for r in rows] == ["0", "1", "2", "3", "10"]  # numeric order
    assert rows[3]["status"] == "failed" and rows[0]["metrics"] == {"test/rel_l2": 0.1, "val/rel_l2": 0.2}
    table = write_summary(tmp_path).read_text()
    assert "| fno | 2 | 0 | 0.2 ± 0.14 | 0.2 ± 0 |" in table  # sample std of 0.1, 0.3
    assert "| sfno | 2 | 1 | 0.06 ± 0.014 | — |" in table
    csv_rows = (tmp_path / "summary.csv").read_text().splitlines()
    assert csv_rows[0] == "job,model,seed,status,test/rel_l2,val/rel_l2" and len(csv_rows) == 6


def test_a_directory_without_jobs_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no Hydra job directories"):
        write_summary(tmp_path)
