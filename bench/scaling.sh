#!/usr/bin/env bash
# Data-parallel scaling on one machine: training tokens/s of the tiny model with 1 process
# (2 threads) and with 2 processes under trm-launch (1 thread each, Gloo over loopback), and the
# share of the step spent waiting for all-reduce, both with one gradient all-reduce after backward
# (allreduce_bucket_mb=0) and with buckets of BUCKET_MB started during backward. One JSON line.
# Usage: bench/scaling.sh [BUILD_DIR] [STEPS] [BUCKET_MB (0.25: ~10 buckets of the tiny model)]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${1:-$ROOT/build}/bin"
STEPS="${2:-60}"
BUCKET="${3:-0.25}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$BIN/trm-data" build --input "$ROOT/../shared/data/alpaca_gpteacher_roleplay.json" --tokenizer byte \
  --max-length 128 --subsample-size 1024 --output-dir "$WORK/ds" >/dev/null
ARGS=(--config-name cfg_tiny --config-dir "$ROOT/configs" --no-progress "data_paths=[$WORK/ds]" global_batch_size=16
      "max_steps=$STEPS" eval_interval=0 arch.halt_exploration_prob=0.0)
"$BIN/trm-train" "${ARGS[@]}" threads=2 "run_dir=$WORK/one" >/dev/null 2>&1
OMP_NUM_THREADS=1 "$BIN/trm-launch" --standalone --nproc-per-node 2 trm-train "${ARGS[@]}" threads=1 \
  allreduce_bucket_mb=0 "run_dir=$WORK/two" >/dev/null 2>&1
OMP_NUM_THREADS=1 "$BIN/trm-launch" --standalone --nproc-per-node 2 trm-train "${ARGS[@]}" threads=1 \
  "allreduce_bucket_mb=$BUCKET" "run_dir=$WORK/overlap" >/dev/null 2>&1
python3 - "$WORK" "$BUCKET" <<'PY'
import json, statistics, sys
def load(run):
    rows = [json.loads(l) for l in open(f"{sys.argv[1]}/{run}/metrics.jsonl") if '"eval"' not in l]
    rows = rows[5:]  # warm-up
    return (statistics.median(r["tokens_per_s"] for r in rows), statistics.median(r["step_s"] for r in rows),
            statistics.median(r["allreduce_s"] for r in rows))
t1, s1, _ = load("one")
t2, s2, a2 = load("two")
t3, s3, a3 = load("overlap")
print(json.dumps({"bench": "scaling", "model": "tiny (cfg_tiny)", "global_batch": 16, "seq_len": 128,
                  "one_process_tokens_per_s": round(t1, 1), "two_process_tokens_per_s": round(t2, 1),
                  "speedup": round(t2 / t1, 3), "two_process_step_s": round(s2, 4),
                  "allreduce_share_of_step": round(a2 / s2, 4),
                  "overlap_bucket_mb": float(sys.argv[2]), "overlap_tokens_per_s": round(t3, 1),
                  "overlap_step_s": round(s3, 4), "overlap_allreduce_share_of_step": round(a3 / s3, 4)}))
PY
