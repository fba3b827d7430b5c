#!/usr/bin/env bash
# One lease of a GPU (H100/H200) in under 8 minutes: the speed benchmarks (issue 13), the GPU
# tests (every family trained and predicted on the device), the optimizer step table (issue 4),
# and, when asked for and time is left, a reduced main job (SFNO on ns2d, refined, zero-shot 256²).
#
#   device run, carry [".whl"]:  bash experiments/gpu_check.sh            # bench + tests + optim
#                                bash experiments/gpu_check.sh main       # only the main job
#   GPU_CHECK_SECONDS=480 (default) is the whole budget; a stage that no longer fits is skipped
#   and says so. Stages run in the order given (default: bench64 solver optstep tests bench256
#   fit optim mgmem).
# .whl holds the wheels the GPU image lacks (../shared/GPU.md), torch-cfd among them.
# Back under $OUT (at most 8 files): summary.json (every figure), gpu_check.log, results/*.json.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT/results"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 NEUROPDE_DATASETS=/tmp/neuropde_datasets
LOG="$OUT/gpu_check.log"
BUDGET=${GPU_CHECK_SECONDS:-480}
t0=$(date +%s)
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__)"; } > /tmp/gpu.txt 2>&1
cat /tmp/gpu.txt | tee -a "$LOG"

# stage NAME SECONDS CMD...: run CMD under a timeout if SECONDS still fit in the budget
stage() {
  local name=$1 need=$2; shift 2
  local left=$(( BUDGET - ($(date +%s) - t0) ))
  if (( left < need )); then
    echo "== $name: skipped ($left s left, needs $need)" | tee -a "$LOG"; return
  fi
  echo "== $name ($(( $(date +%s) - t0 )) s)" | tee -a "$LOG"
  timeout "$need" "$@" > /tmp/stage.log 2>&1
  echo "   exit $? after $(( $(date +%s) - t0 )) s" | tee -a "$LOG"
  tail -25 /tmp/stage.log | tee -a "$LOG"
}

# end to end: train.py on ns2d_small (fno_quick, 64², batch 8), neuraloperator against ours compiled
run_fit() {
  for b in neuralop neuropde; do
    extra=$([ $b = neuropde ] && echo compile=reduce-overhead)
    stage "fit: fno_quick backend=$b $extra" 75 python3 train.py experiment=fno_quick model.net.backend=$b $extra \
      trainer.accelerator=gpu trainer.max_epochs=4 trainer.enable_progress_bar=false run_dir=/tmp/fit_$b
  done
}

run_main() {
  RUN=/tmp/sfno_ns2d_run
  stage "main job: train.py model=sfno data=ns2d (reduced)" 180 python3 train.py model=sfno data=ns2d \
    scheduler=onecycle optimizer.lr=3e-3 data.samples.train=256 data.samples.val=16 data.samples.test=16 \
    data.generator.t_warmup=10 data.generator.n_frames=30 data.generator.shard_size=144 \
    trainer.max_epochs=10 trainer.enable_progress_bar=false run_dir=$RUN
  stage "refine at 64²" 45 python3 predict.py ckpt=$RUN refine=true run_dir=/tmp/pred64
  stage "zero-shot + refine at 256²" 75 python3 predict.py ckpt=$RUN data.resolution=256 refine=true run_dir=/tmp/pred256
}

BENCH="--results $OUT/results"
STAGES=("$@")
(( ${#STAGES[@]} )) || STAGES=(bench64 solver optstep tests bench256 fit optim mgmem)
for s in "${STAGES[@]}"; do
  case $s in
    bench64) stage "bench: FNO train step 64²" 170 python3 experiments/bench/train_step.py --device cuda \
               --workloads 64 --budget 120 --variants peer_eager ours_eager ours_eager_gemm ours_compiled \
               ours_compiled_cudagraphs $BENCH ;;
    solver) stage "bench: ns2d solver vs torch-cfd" 80 python3 experiments/bench/ns2d_solver.py --device cuda $BENCH ;;
    optstep) stage "bench: Muon step vs torch.optim.Muon (63M)" 40 python3 experiments/bench/optimizer_step.py \
               --device cuda $BENCH ;;
    tests) stage "gpu tests" 170 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py ;;
    bench256) stage "bench: FNO train step 256²" 150 python3 experiments/bench/train_step.py --device cuda \
                --workloads 256 --budget 100 --variants peer_eager peer_tfno ours_eager ours_compiled \
                ours_bf16_compiled $BENCH ;;
    optim) stage "optimizer step table (issue 4)" 75 python3 experiments/optimizers/bench_step.py --device cuda
           cp experiments/optimizers/results/step_cuda.json "$OUT/results/" 2>/dev/null ;;
    mgmem) stage "MG-TFNO memory per training call at 512²" 40 python3 experiments/mg_tfno/run.py --full \
             --memory-only --resolution 512 ;;
    fit) run_fit ;;
    main) run_main ;;
    *) echo "unknown stage $s (bench64 solver optstep tests bench256 fit optim mgmem main)" | tee -a "$LOG" ;;
  esac
done

echo "== summary ($(( $(date +%s) - t0 )) s)" | tee -a "$LOG"
python3 - "$OUT" <<'PY' | tee -a "$LOG"
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
def load(p):
    try:
        return json.loads(pathlib.Path(p).read_text())
    except Exception as err:
        return {"missing": str(err)[:120]}
summary = {"gpu": pathlib.Path("/tmp/gpu.txt").read_text().strip()}
for f in sorted((out / "results").glob("*.json")):
    r = load(f)
    summary[f.stem] = {k: r.get(k) for k in ("ours", "peer", "ratio", "unit", "ours_variant")} if "ratio" in r else r
train, pred, pred64 = (load(p) for p in ("/tmp/sfno_ns2d_run/metrics.json", "/tmp/pred256/metrics.json",
                                          "/tmp/pred64/metrics.json"))
if "missing" not in train:
    summary["main_job"] = {
        "sfno_ns2d_test_rel_l2_64": train.get("test/rel_l2"), "persistence_64": train.get("test/rel_l2_persistence"),
        "refined_rel_l2_64": pred64.get("test/rel_l2_refined"), "estimate_spearman_64": pred64.get("estimate_spearman"),
        "zero_shot_rel_l2_256": pred.get("test/rel_l2"), "zero_shot_refined_rel_l2_256": pred.get("test/rel_l2_refined")}
for b in ("neuralop", "neuropde"):
    fit = load(f"/tmp/fit_{b}/metrics.json")
    if "missing" not in fit:
        summary[f"fit_fno_quick_{b}"] = {k: fit.get(k) for k in ("test/rel_l2", "sec_per_epoch", "train_seconds")}
mg = pathlib.Path("experiments/mg_tfno/results/full_memory.json")
if mg.exists():
    summary["mg_tfno_memory_512"] = load(mg)
(out / "summary.json").write_text(json.dumps(summary, indent=2))
print(json.dumps(summary, indent=2))
PY
