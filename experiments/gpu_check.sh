#!/usr/bin/env bash
# One lease of a GPU (H100/H200), under 8 minutes: GPU tests (each family's tiny preset trained and
# predicted on the device), solver speed, optimizer step costs,
# MG-TFNO memory per call at 512², and a reduced main job
# (SFNO on ns2d: 256 training trajectories solved at 256², stored at 64²), Spectral-Refiner at 64²,
# and the zero-shot (and refined) error at 256². Writes $OUT/summary.json (the table) and logs; prints the table last.
#
#   device run, carry [".whl"]:  bash experiments/gpu_check.sh
# .whl holds the wheels the GPU image lacks (../shared/GPU.md).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 NEUROPDE_DATASETS=/tmp/neuropde_datasets
# at most 8 files come back from $OUT: summary.json, step_cuda.json and six logs
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > /tmp/gpu.txt 2>&1
python3 -c "import torch; print('torch', torch.__version__)" >> /tmp/gpu.txt
t0=$(date +%s)

stage() { echo "== $1 ($(( $(date +%s) - t0 )) s)"; }

stage "gpu tests"
timeout 160 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py > "$OUT/gpu_tests.log" 2>&1
tail -2 "$OUT/gpu_tests.log"

stage "solver speed"
timeout 40 python3 experiments/bench/ns_solver_speed.py --device cuda 64x64 64x256 8x1024 > "$OUT/ns_speed.log" 2>&1
tail -5 "$OUT/ns_speed.log"

stage "optimizer step benchmark"
timeout 75 python3 experiments/optimizers/bench_step.py --device cuda > "$OUT/bench_step.log" 2>&1
cp experiments/optimizers/results/step_cuda.json "$OUT/" 2>/dev/null

stage "MG-TFNO memory per training call at 512² (no training)"
timeout 40 python3 experiments/mg_tfno/run.py --full --memory-only --resolution 512 > /tmp/mg_memory.log 2>&1
tail -1 /tmp/mg_memory.log

stage "reduced main job: train.py model=sfno data=ns2d"
RUN=/tmp/sfno_ns2d_run
timeout 180 python3 train.py model=sfno data=ns2d scheduler=onecycle optimizer.lr=3e-3 \
  data.samples.train=256 data.samples.val=16 data.samples.test=16 \
  data.generator.t_warmup=10 data.generator.n_frames=30 data.generator.shard_size=144 \
  trainer.max_epochs=10 trainer.enable_progress_bar=false run_dir=$RUN > "$OUT/train.log" 2>&1
tail -3 "$OUT/train.log"

stage "refine at 64², then zero-shot + refine at 256²"
timeout 45 python3 predict.py ckpt=$RUN refine=true run_dir=/tmp/pred64 > "$OUT/predict64.log" 2>&1
tail -1 "$OUT/predict64.log"
timeout 75 python3 predict.py ckpt=$RUN data.resolution=256 refine=true run_dir=/tmp/pred256 > "$OUT/predict.log" 2>&1
tail -1 "$OUT/predict.log"

stage "summary"
python3 - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
def load(p):
    try:
        return json.loads(pathlib.Path(p).read_text())
    except Exception as err:
        return {"error": str(err)}
train, pred = load("/tmp/sfno_ns2d_run/metrics.json"), load("/tmp/pred256/metrics.json")
pred64 = load("/tmp/pred64/metrics.json")
summary = {
    "gpu": pathlib.Path("/tmp/gpu.txt").read_text().strip(),
    "gpu_tests": (out / "gpu_tests.log").read_text().strip().splitlines()[-1:],
    "ns_speed": [l for l in (out / "ns_speed.log").read_text().splitlines() if "field-steps" in l or "x" in l][-6:],
    "sfno_ns2d_test_rel_l2_64": train.get("test/rel_l2"),
    "sfno_ns2d_persistence_64": train.get("test/rel_l2_persistence"),
    "sfno_ns2d_epochs": train.get("epochs"),
    "sfno_refined_rel_l2_64": pred64.get("test/rel_l2_refined"),
    "sfno_estimate_spearman_64": pred64.get("estimate_spearman"),
    "sfno_seconds_per_refined_sample_64": pred64.get("seconds_per_refined_sample"),
    "sfno_zero_shot_rel_l2_256": pred.get("test/rel_l2"),
    "sfno_zero_shot_refined_rel_l2_256": pred.get("test/rel_l2_refined"),
    "sfno_zero_shot_persistence_256": pred.get("test/rel_l2_persistence"),
    "mg_tfno_memory_512": load("experiments/mg_tfno/results/full_memory.json"),
}
(out / "summary.json").write_text(json.dumps(summary, indent=2))
print(json.dumps(summary, indent=2))
PY
