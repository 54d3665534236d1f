#!/usr/bin/env bash
# Data-parallel training under trm-launch, end to end over the real binaries (Gloo on loopback):
#  1. SIGKILL of one of 2 ranks with --max-restarts 1: the group restarts from the last
#     checkpoint and ends with the same final weights, byte for byte, as an undisturbed run;
#  2. the same with --max-restarts 0: the launcher fails within 30 s and no process is left;
#  3. two nodes simulated by two launchers (--nnodes 2) train together, again to the same weights;
#  4. elastic (--nnodes 1:2): node 1 is SIGKILLed, the run goes on on node 0 and ends within 1e-5.
# Usage: launch_restart.sh BIN_DIR SOURCE_DIR SHARED_DIR
set -euo pipefail
BIN="$1"; SRC="$2"; SHARED="$3"
WORK="$(mktemp -d)"
cleanup() { pkill -9 -f "run_dir=$WORK/" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

"$BIN/trm-data" build --input "$SHARED/data/alpaca_gpteacher_roleplay.json" --tokenizer byte --max-length 48 \
  --subsample-size 64 --output-dir "$WORK/ds" >/dev/null
TRAIN=(trm-train --config-name cfg_tiny --config-dir "$SRC/configs" --no-progress "data_paths=[$WORK/ds]"
       global_batch_size=8 max_steps=60 checkpoint_interval_steps=5 keep_checkpoints=0 threads=1 log_interval=10
       eval_interval=0)

wait_for() {  # path, seconds
  for _ in $(seq 1 $(($2 * 10))); do [ -e "$1" ] && return 0; sleep 0.1; done
  echo "timed out waiting for $1"; return 1
}
kill_rank1() {  # run dir: SIGKILL the trm-train process whose RANK is 1
  for p in $(pgrep -f "run_dir=$1" || true); do
    if tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -qx 'RANK=1'; then kill -9 "$p"; echo "killed rank 1 (pid $p)"; return 0; fi
  done
  echo "rank 1 of $1 not found"; return 1
}

echo "== undisturbed 2-rank run"
"$BIN/trm-launch" --standalone --nproc-per-node 2 "${TRAIN[@]}" "run_dir=$WORK/a" > "$WORK/a.log" 2>&1
test -f "$WORK/a/step_60/model.safetensors"

echo "== SIGKILL of rank 1 with --max-restarts 1"
"$BIN/trm-launch" --standalone --nproc-per-node 2 --max-restarts 1 --log-dir "$WORK/logs_b" \
  "${TRAIN[@]}" "run_dir=$WORK/b" > "$WORK/b.log" 2>&1 &
launcher=$!
wait_for "$WORK/b/step_10/state.json" 120
kill_rank1 "$WORK/b"
rc=0; wait "$launcher" || rc=$?
[ "$rc" -eq 0 ] || { echo "launcher exited $rc"; cat "$WORK/b.log"; exit 1; }
[ -d "$WORK/logs_b/attempt_1" ] || { echo "no restart happened"; exit 1; }
cmp "$WORK/a/step_60/model.safetensors" "$WORK/b/step_60/model.safetensors"
cmp "$WORK/a/step_60/optimizer.safetensors" "$WORK/b/step_60/optimizer.safetensors"
echo "restarted run ends with the undisturbed run's weights and optimizer state, byte for byte"

echo "== SIGKILL of rank 1 with --max-restarts 0"
"$BIN/trm-launch" --standalone --nproc-per-node 2 --max-restarts 0 "${TRAIN[@]}" "run_dir=$WORK/c" \
  > "$WORK/c.log" 2>&1 &
launcher=$!
wait_for "$WORK/c/step_10/state.json" 120
kill_rank1 "$WORK/c"
start=$(date +%s)
rc=0; wait "$launcher" || rc=$?
elapsed=$(( $(date +%s) - start ))
[ "$rc" -ne 0 ] || { echo "launcher exited 0 after a killed rank"; exit 1; }
[ "$elapsed" -le 30 ] || { echo "launcher took ${elapsed}s to give up"; exit 1; }
grep -q "rank 1" "$WORK/c.log" || { echo "the failure report does not name rank 1"; cat "$WORK/c.log"; exit 1; }
if pgrep -f "run_dir=$WORK/c" >/dev/null; then echo "processes of the run are left:"; pgrep -af "run_dir=$WORK/c"; exit 1; fi
echo "launcher failed in ${elapsed}s (exit $rc), no process left"

echo "== two nodes on one machine"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
for node in 0 1; do
  "$BIN/trm-launch" --nnodes 2 --nproc-per-node 1 --node-rank $node --rdzv-endpoint "127.0.0.1:$port" \
    --rdzv-id e2e "${TRAIN[@]}" "run_dir=$WORK/d" > "$WORK/d$node.log" 2>&1 &
  pids[$node]=$!
done
for node in 0 1; do wait "${pids[$node]}" || { echo "node $node failed"; cat "$WORK/d$node.log"; exit 1; }; done
cmp "$WORK/a/step_60/model.safetensors" "$WORK/d/step_60/model.safetensors"
echo "two launchers trained together to the same weights"

echo "== elastic: --nnodes 1:2, node 1 lost, the run goes on on node 0"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
for node in 0 1; do
  # Each node its own run_dir: no shared storage.
  "$BIN/trm-launch" --nnodes 1:2 --nproc-per-node 1 --node-rank $node --rdzv-endpoint "127.0.0.1:$port" \
    --rdzv-id elastic --rdzv-timeout-s 5 --max-restarts 1 "${TRAIN[@]}" "run_dir=$WORK/e$node" > "$WORK/e$node.log" 2>&1 &
  pids[$node]=$!
done
wait_for "$WORK/e0/step_10/state.json" 120
kill -9 "${pids[1]}"  # node 1's machine dies: its launcher, and its rank with it (PR_SET_PDEATHSIG)
wait "${pids[1]}" 2>/dev/null || true
wait "${pids[0]}" || { echo "node 0 did not carry on alone"; cat "$WORK/e0.log"; exit 1; }
grep -q "the run goes on with 1 node" "$WORK/e0.log" || { echo "node 1 was not declared lost"; cat "$WORK/e0.log"; exit 1; }
grep -q "attempt 2: 1 of 1..2 nodes" "$WORK/e0.log" || { echo "no attempt on one node"; cat "$WORK/e0.log"; exit 1; }
python3 "$SRC/tests/e2e/weights_close.py" "$WORK/a/step_60/model.safetensors" "$WORK/e0/step_60/model.safetensors" 1e-5 \
  || { echo "the elastic run is not within 1e-5 of the undisturbed one"; exit 1; }
echo "elastic run lost a node, went on with one, and ended within 1e-5 of the undisturbed run"
