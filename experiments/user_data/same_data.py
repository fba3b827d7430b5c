"""The same data through the user's door: does an FNO trained on ``ns2d_small`` read from a plain
``.npz`` (``data=file``) or from its export in The Well's schema (``data=well``) reach the test error
it reaches on ``data=ns2d_small`` directly? (issue 27: within 2×)

    python experiments/user_data/same_data.py            # fno_quick, 8 epochs each (22 min in all here, other jobs on the cores)
    python experiments/user_data/same_data.py --smoke    # ns2d_tiny, fno_tiny: seconds, into a temporary folder

The ``.npz`` holds every trajectory of the three splits, (160, 30, 64, 64), and is split by
``data.split`` (seeded: another test set than the generated one); the Well export keeps the
generated train/valid/test splits. Windows, batch and model are the same in all three runs.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from neuropde.data.exporters import export_well  # noqa: E402
from neuropde.data.generators import ensure_generated  # noqa: E402
from neuropde.run import compose_config, data_root, to_dict, train  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny data and model, results into a temporary folder")
    parser.add_argument("--out", default=None, help="folder of the results JSON (default: results/, or a temporary one)")
    args = parser.parse_args(argv)
    data, experiment = ("ns2d_tiny", "fno_tiny") if args.smoke else ("ns2d_small", "fno_quick")
    out = Path(args.out or (tempfile.mkdtemp(prefix="same_data_") if args.smoke else HERE / "results"))
    work = Path(tempfile.mkdtemp(prefix="same_data_work_"))
    window = ["data.window.t_in=10", "data.window.t_out=10", "data.window.eval_stride=5", "data.loader.batch_size=8"]
    if args.smoke:
        window = ["data.window.t_in=4", "data.window.t_out=4", "data.window.eval_stride=4", "data.loader.batch_size=4"]

    cfg = compose_config("train", [f"experiment={experiment}", f"data={data}"])
    store = ensure_generated(to_dict(cfg.data), data_root(cfg))
    arrays = []
    for split in ("train", "val", "test"):
        with h5py.File(store.path(split)) as f:
            arrays.append(f["fields"][:])
    npz = work / f"{data}.npz"
    np.savez(npz, vorticity=np.concatenate(arrays))
    well = export_well(store.dir, to_dict(cfg.data), work / f"{data}_well")

    runs = {}
    for name, overrides in (("generated", [f"data={data}"]),
                            ("file", ["data=file", f"data.path={npz}", "data.keys=[vorticity]"]),
                            ("well", ["data=well", f"data.path={well}"])):
        start = time.perf_counter()
        metrics = train(compose_config("train", [f"experiment={experiment}", *overrides, *window,
                                                 f"run_dir={work / name}", "trainer.enable_progress_bar=false"]))
        runs[name] = {"test/rel_l2": metrics["test/rel_l2"], "test/rel_l2_persistence": metrics.get("test/rel_l2_persistence"),
                      "seconds": time.perf_counter() - start, "epochs": metrics["epochs"]}
        print(name, json.dumps(runs[name]), flush=True)
    base = runs["generated"]["test/rel_l2"]
    result = {"data": data, "experiment": experiment, "npz_shape": list(np.load(npz)["vorticity"].shape), "runs": runs,
              "ratio_file": runs["file"]["test/rel_l2"] / base, "ratio_well": runs["well"]["test/rel_l2"] / base}
    out.mkdir(parents=True, exist_ok=True)
    name = "same_data_smoke.json" if args.smoke else "same_data.json"
    (out / name).write_text(json.dumps(result, indent=2))
    print(f"test rel L2: generated {base:.4g}, file {runs['file']['test/rel_l2']:.4g} ({result['ratio_file']:.2f}×), "
          f"well {runs['well']['test/rel_l2']:.4g} ({result['ratio_well']:.2f}×); results in {out / name}")


if __name__ == "__main__":
    main()
