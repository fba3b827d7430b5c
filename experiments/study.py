"""What every study script (``experiments/<study>/run.py``) shares: where it writes.

Imported after ``sys.path.append(<experiments dir>)`` (appended: nothing of the project is shadowed).
"""
from __future__ import annotations

import tempfile
from pathlib import Path


def study_dirs(here: Path, study: str, smoke: bool, out: str | None, runs: Path | None = None) -> tuple[str, Path]:
    """``(out, results_dir)`` of a study script run from folder ``here``.

    With ``--smoke`` everything goes to ``out`` (a new temporary folder when not given), the results
    under ``out/results``, so that a smoke run never touches ``results/``. Otherwise run dirs go to
    ``out`` (default ``runs``: ``here/runs``) and results to ``here/results``.
    """
    if smoke and out is None:
        out = tempfile.mkdtemp(prefix=f"neuropde-smoke-{study}-")
    results = Path(out) / "results" if smoke else here / "results"
    return str(out or runs or here / "runs"), results
