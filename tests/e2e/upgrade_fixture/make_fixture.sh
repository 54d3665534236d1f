#!/usr/bin/env bash
# How the fixtures here were made: coordinator data directories written by earlier releases,
# kept so that tests/e2e/upgrade.sh can check that the current coordinator takes them over with
# every job, dataset and checkpoint:
#   data-2026-12-01/  the release before owners and namespaces (commit ea0294d);
#   data-2026-12-02/  the release before schema versions (commit 479a099: schema version 1,
#                     SQLite user_version 0).
# Usage: make_fixture.sh BIN_DIR SOURCE_DIR OUT_DIR  (BIN_DIR: that release's binaries)
set -euo pipefail
BIN="$1"; SRC="$2"; OUT="$3"
WORK="$(mktemp -d)"
trap 'pkill -9 -f "$WORK/" 2>/dev/null || true; kill -9 $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export TRM_COORDINATOR="127.0.0.1:$PORT"
"$BIN/trm-coordinator" --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --heartbeat-interval-ms 300 \
  --config-dir "$SRC/configs" >"$WORK/coordinator.log" 2>&1 &
COORD=$!
for _ in $(seq 1 100); do "$BIN/trmctl" workers >/dev/null 2>&1 && break; sleep 0.1; done
"$BIN/trm-worker" --coordinator "127.0.0.1:$PORT" --id w1 --cpu-slots 1 --work-dir "$WORK/w1" >"$WORK/w1.log" 2>&1 &
for _ in $(seq 1 100); do "$BIN/trmctl" workers 2>/dev/null | grep -q '^w1 ' && break; sleep 0.1; done
"$BIN/trm-data" build --input "$SRC/examples/chat_example.json" --format sharegpt --tokenizer byte --max-length 32 \
  --train-split 0.9 --output-dir "$WORK/ds" >/dev/null
"$BIN/trmctl" dataset push "$WORK/ds" --name ex
JOB=$("$BIN/trmctl" submit --config-name cfg_tiny --dataset ex --name old-job global_batch_size=8 max_steps=2 \
      checkpoint_interval_steps=1 keep_checkpoints=0 eval_interval=0 threads=1 arch.hidden_size=16 arch.num_heads=2 \
      arch.L_layers=1 arch.halt_max_steps=2)
"$BIN/trmctl" watch "$JOB" >/dev/null
QUEUED=$("$BIN/trmctl" submit --config-name cfg_tiny --dataset ex --name cancelled-job --world-size 1 max_steps=1)
"$BIN/trmctl" cancel "$QUEUED" >/dev/null
"$BIN/trmctl" list
"$BIN/trmctl" checkpoints "$JOB"
kill -TERM "$COORD"; wait "$COORD" || true
rm -rf "$WORK/data/tmp"
mkdir -p "$OUT"
cp -a "$WORK/data/." "$OUT/"
du -sh "$OUT"
