#!/usr/bin/env bash
# Same config, same bytes, whatever the environment: the `threads` key governs every thread pool
# of trm-train (LibTorch's, OpenMP's, OpenBLAS's), so OMP_NUM_THREADS / OPENBLAS_NUM_THREADS left
# by a launcher or a shell change nothing, and threads=0 resolves from the cores the process
# may use (its affinity), not from them.
# Usage: threads.sh BIN_DIR SOURCE_DIR SHARED_DIR
set -euo pipefail
BIN="$1"; SRC="$2"; SHARED="$3"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

"$BIN/trm-data" build --input "$SHARED/data/alpaca_gpteacher_roleplay.json" --tokenizer byte --max-length 48 \
  --subsample-size 64 --output-dir "$WORK/ds" >/dev/null
# Wide enough that OpenBLAS runs its threaded GEMM driver when it has more than one thread.
TRAIN=(--config-name cfg_tiny --config-dir "$SRC/configs" --no-progress "data_paths=[$WORK/ds]"
       global_batch_size=8 max_steps=10 checkpoint_interval_steps=10 keep_checkpoints=0 log_interval=10
       eval_interval=0 arch.hidden_size=128 arch.num_heads=4)

train() {  # name, then env assignments / trm-train overrides are given by the caller
  local name="$1"; shift
  "$@" "run_dir=$WORK/$name" > "$WORK/$name.log" 2>&1 || { echo "run $name failed:"; cat "$WORK/$name.log"; exit 1; }
  test -f "$WORK/$name/step_10/model.safetensors"
}
same() {  # run a, run b
  cmp "$WORK/$1/step_10/model.safetensors" "$WORK/$2/step_10/model.safetensors" ||
    { echo "runs $1 and $2 of the same config differ"; exit 1; }
  echo "$1 == $2, byte for byte"
}

echo "== threads=1, with the pools' variables at 1 and at $(( $(nproc) + 2 ))"
many=$(( $(nproc) + 2 ))
train a env OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 "$BIN/trm-train" "${TRAIN[@]}" threads=1
train b env OMP_NUM_THREADS="$many" OPENBLAS_NUM_THREADS="$many" "$BIN/trm-train" "${TRAIN[@]}" threads=1
same a b

echo "== threads=2, with the pools' variables at 1 and unset"
train c env OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 GOTO_NUM_THREADS=1 "$BIN/trm-train" "${TRAIN[@]}" threads=2
train d env -u OMP_NUM_THREADS -u OPENBLAS_NUM_THREADS -u GOTO_NUM_THREADS "$BIN/trm-train" "${TRAIN[@]}" threads=2
same c d

echo "== threads=0 on one core (affinity) is threads=1, whatever OMP_NUM_THREADS says"
# The first core this shell may run on (a container's cpuset need not include core 0).
core=$(taskset -pc $$ | sed 's/.*: *//' | cut -d, -f1 | cut -d- -f1)
train e env OMP_NUM_THREADS="$many" taskset -c "$core" "$BIN/trm-train" "${TRAIN[@]}" threads=0
same a e
