"""Update RMS / lr of one step of every orthogonalised rule, per kind of weight and gradient spectrum.

    python experiments/optimizers/update_rms.py      # -> results/update_rms.json and a Markdown table

The measurement is the one ``tests/test_update_rms.py`` asserts on (one step from a fresh state,
weight decay 0, through the ``optimizer=<name>`` factories); here every cell is printed, for
``match_rms_adamw`` (the default) and the papers' ``original`` scaling.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.test_update_rms import FACTORIES, KINDS, update_rms_per_lr  # noqa: E402

OUT = Path(__file__).with_name("results") / "update_rms.json"


def main() -> None:
    torch.set_num_threads(1)
    table = {}
    for convention in ("match_rms_adamw", "original"):
        for name in FACTORIES:
            if name == "symmetric" and convention == "original":
                continue  # symmetric's reference form is "none" (per-block learning rates)
            for kind, (role, shape, is_complex) in KINDS.items():
                for spectrum in ("gaussian", "low_rank"):
                    key = f"{convention}/{name}/{kind}/{spectrum}"
                    table[key] = round(update_rms_per_lr(name, role, shape, is_complex, spectrum, convention), 4)
    OUT.write_text(json.dumps({"torch": torch.__version__, "update_rms_per_lr": table}, indent=1) + "\n")
    for convention in ("match_rms_adamw", "original"):
        print(f"\n{convention}: update RMS / lr (Gaussian gradient; rank 4 + 1 % noise)\n")
        print("| rule | " + " | ".join(KINDS) + " |")
        print("|---" * (len(KINDS) + 1) + "|")
        for name in FACTORIES:
            cells = [f"{table[f'{convention}/{name}/{k}/gaussian']:.3f}; {table[f'{convention}/{name}/{k}/low_rank']:.3f}"
                     for k in KINDS if f"{convention}/{name}/{k}/gaussian" in table]
            if cells:
                print(f"| `{name}` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
