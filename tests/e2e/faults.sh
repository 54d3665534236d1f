#!/usr/bin/env bash
# Faults the chaos test does not cover, over the real binaries on loopback (CPU, Gloo):
#  1. hang: one rank of a 2-rank job is frozen (SIGSTOP); the other waits in the all-reduce.
#     The coordinator fails the attempt as "hang" when a rank outstays its phase budget, the
#     frozen rank is killed, and the job resumes from its checkpoint and completes.
#  2. worker disk full: a worker whose work dir is a tiny tmpfs cannot save a checkpoint; the rank
#     exits with trm-train's disk-full code and the job fails as "disk_full" naming the cause;
#     the worker stays up.
#  3. coordinator disk full: its data dir (a tmpfs) fills up mid-job. A dataset push is refused
#     with RESOURCE_EXHAUSTED, reads keep working, the job shows the warning while its checkpoints
#     cannot be stored, and completes once space is freed.
#  4. out of memory: a worker under an address-space limit runs a model that does not fit; the
#     rank's failure is classified "oom".
#  5. collective timeout: with TRM_COLLECTIVE_TIMEOUT_S=3 and no hang budget that short, a frozen
#     rank makes its peer's all-reduce time out; the failure is classified "timeout".
# The tmpfs mounts need a private mount namespace (unshare -rm); the script re-runs itself in one.
# Usage: faults.sh BIN_DIR SOURCE_DIR
set -euo pipefail
BIN="$(cd "$1" && pwd)"; SRC="$(cd "$2" && pwd)"
if [ -z "${TRM_FAULTS_IN_NS:-}" ]; then
  if ! unshare -rm true 2>/dev/null; then
    echo "SKIP: unshare -rm (a private mount namespace for tmpfs disks) is not allowed here"; exit 77
  fi
  TRM_FAULTS_IN_NS=1 exec unshare -rm bash "$0" "$BIN" "$SRC"
fi
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  pkill -9 -f "$WORK/" 2>/dev/null || true
  for m in "$WORK"/*fs; do umount "$m" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$WORK"/*.log; do echo "--- $f"; tail -n 30 "$f"; done; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ctl() { "$BIN/trmctl" "$@"; }
field() {  # job field
  ctl status "$1" --json | python3 -c 'import json,sys; print(json.load(sys.stdin).get(sys.argv[1], ""))' "$2"
}
wait_for() {  # seconds description command...
  local secs=$1 what=$2; shift 2
  for _ in $(seq 1 $((secs * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  fail "timed out after ${secs}s waiting for: $what"
}
state_is() { [ "$(field "$1" state)" = "$2" ]; }
step_at_least() { [ "$(field "$1" step || echo 0)" -ge "$2" ] 2>/dev/null; }

PORT=$(free_port)
export TRM_COORDINATOR="127.0.0.1:$PORT"
start_coordinator() {  # data_dir extra-flags...
  local dir=$1; shift
  "$BIN/trm-coordinator" --listen "127.0.0.1:$PORT" --data-dir "$dir" --heartbeat-interval-ms 300 \
    --config-dir "$SRC/configs" "$@" >>"$WORK/coordinator.log" 2>&1 &
  COORD=$!; PIDS+=("$COORD")
  wait_for 20 "coordinator up" ctl workers
}
stop_all() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  pkill -9 -f "$WORK/" 2>/dev/null || true
  PIDS=()
  sleep 0.5
}
start_worker() {  # id work_dir extra-flags...
  local id=$1 dir=$2; shift 2
  "$BIN/trm-worker" --coordinator "127.0.0.1:$PORT" --id "$id" --cpu-slots 1 --work-dir "$dir" "$@" \
    >>"$WORK/$id.log" 2>&1 &
  PIDS+=("$!")
}
workers_alive() { [ "$(ctl workers 2>/dev/null | awk 'NR > 1 && $5 == "yes"' | wc -l)" -ge "$1" ]; }
submit() {  # name world max_restarts overrides...
  local name=$1 world=$2 restarts=$3; shift 3
  ctl submit --config-name cfg_tiny --config-dir "$SRC/configs" --dataset example-chat --world-size "$world" \
    --max-restarts "$restarts" --name "$name" eval_interval=0 threads=1 log_interval=10 "$@"
}

"$BIN/trm-data" build --input "$SRC/examples/chat_example.json" --format sharegpt --tokenizer byte --max-length 64 \
  --train-split 0.9 --output-dir "$WORK/ds" >/dev/null

# ---------------------------------------------------------------------------------------- 1. hang
start_coordinator "$WORK/coord1" --hang-budget-s allreduce=6,data=30,compute=30
start_worker w1 "$WORK/w1"; start_worker w2 "$WORK/w2"
wait_for 20 "2 workers" workers_alive 2
ctl dataset push "$WORK/ds" --name example-chat >/dev/null
JOB=$(submit hang 2 2 global_batch_size=8 max_steps=300 checkpoint_interval_steps=10)
wait_for 180 "hang job at step 15" step_at_least "$JOB" 15
RANK1=$(pgrep -f "$WORK/w2/jobs/$JOB/attempt_1/" | head -n 1 || true)
[ -n "$RANK1" ] || RANK1=$(pgrep -f "$WORK/w1/jobs/$JOB/attempt_1/" | tail -n 1)
[ -n "$RANK1" ] || fail "no rank process of $JOB found"
kill -STOP "$RANK1"
echo "froze rank process $RANK1 at step $(field "$JOB" step)"
t0=$(date +%s)
wait_for 60 "hang detected" bash -c "[ \"\$('$BIN/trmctl' status '$JOB' --json | python3 -c 'import json,sys; print(json.load(sys.stdin).get(\"restarts\", 0))')\" -ge 1 ]"
echo "hang detected after $(( $(date +%s) - t0 )) s"
[ "$(field "$JOB" failure_kind)" = "hang" ] || fail "failure kind $(field "$JOB" failure_kind), expected hang"
wait_for 240 "hang job succeeds after the restart" state_is "$JOB" JOB_SUCCEEDED
# The job's history says which rank hung in which phase.
ctl watch "$JOB" --events > "$WORK/hang_events.jsonl" 2>/dev/null || fail "watch of the finished job failed"
grep -o '(hang): rank [0-9]* in PHASE_[A-Z]* for [0-9.]* s at step [0-9]* (budget [0-9.]* s)' "$WORK/hang_events.jsonl" \
  | head -n 1 | grep . || fail "no event names the hung rank and its phase"
kill -0 "$RANK1" 2>/dev/null && fail "the frozen rank $RANK1 was left behind"
echo "1. hang: ok (restarts $(field "$JOB" restarts))"
stop_all

# ------------------------------------------------------------------------------ 2. worker disk full
mkdir -p "$WORK/w3fs"
mount -t tmpfs -o size=1m tmpfs "$WORK/w3fs"
start_coordinator "$WORK/coord2"
ctl dataset push "$WORK/ds" --name example-chat >/dev/null  # a fresh coordinator: no dead workers known
start_worker w3 "$WORK/w3fs/work"
wait_for 20 "worker w3" workers_alive 1
# The dataset and logs fit in 1 MiB; the checkpoint of a hidden_size 256 model (about 3 MB) does not.
JOB=$(submit diskfull 1 1 global_batch_size=8 max_steps=40 checkpoint_interval_steps=5 arch.hidden_size=256 arch.num_heads=4)
wait_for 120 "disk-full job fails" state_is "$JOB" JOB_FAILED
ctl status "$JOB"
[ "$(field "$JOB" failure_kind)" = "disk_full" ] || fail "failure kind $(field "$JOB" failure_kind), expected disk_full"
MSG=$(field "$JOB" message)
[[ "$MSG" == *"No space left on device"* ]] || fail "the message does not name the cause: $MSG"
workers_alive 1 || fail "worker w3 is gone"
echo "2. worker disk full: ok"
stop_all
umount "$WORK/w3fs"

# ------------------------------------------------------------------------- 3. coordinator disk full
mkdir -p "$WORK/c2fs"
mount -t tmpfs -o size=64m tmpfs "$WORK/c2fs"
start_coordinator "$WORK/c2fs/coord"
start_worker w4 "$WORK/w4"
wait_for 20 "worker w4" workers_alive 1
ctl dataset push "$WORK/ds" --name example-chat >/dev/null
JOB=$(submit coordfull 1 0 global_batch_size=8 max_steps=400 checkpoint_interval_steps=20 arch.hidden_size=128 \
      arch.num_heads=4)
wait_for 120 "a first checkpoint" bash -c "'$BIN/trmctl' checkpoints '$JOB' | grep -q step_"
# Fill the coordinator's disk.
dd if=/dev/zero of="$WORK/c2fs/filler" bs=64k 2>/dev/null || true
df -h "$WORK/c2fs" | tail -n 1
# A dataset push now fails with a clear error and leaves nothing behind.
head -c 4000000 /dev/urandom | base64 > "$WORK/big.txt"
mkdir -p "$WORK/bigds" && cp -r "$WORK/ds/." "$WORK/bigds/" && cp "$WORK/big.txt" "$WORK/bigds/"
if OUT=$(ctl dataset push "$WORK/bigds" --name big 2>&1); then fail "a push to a full disk succeeded"; fi
echo "push refused: $OUT"
echo "$OUT" | grep -q "RESOURCE_EXHAUSTED\|No space left" || fail "the push error does not say the disk is full: $OUT"
# Reads keep working; the job shows why its checkpoints are held back.
ctl list >/dev/null || fail "list failed while the disk is full"
wait_for 120 "the warning" bash -c "'$BIN/trmctl' status '$JOB' | grep -q 'warning:.*No space left'"
ctl status "$JOB" | grep "warning:"
kill -0 "$COORD" || fail "the coordinator died on a full disk"
rm -f "$WORK/c2fs/filler"
wait_for 300 "job succeeds once space is back" state_is "$JOB" JOB_SUCCEEDED
[ -z "$(field "$JOB" warning)" ] || fail "the warning outlived the problem"
ctl checkpoints "$JOB" | grep -q "step_400" || fail "the final checkpoint was not stored"
ls "$WORK/c2fs/coord/tmp" 2>/dev/null | grep -q . && fail "temporary upload files left: $(ls "$WORK/c2fs/coord/tmp")"
echo "3. coordinator disk full: ok"
stop_all
umount "$WORK/c2fs"

# ---------------------------------------------------------------------------- 4. out of memory
start_coordinator "$WORK/coord4"
ctl dataset push "$WORK/ds" --name example-chat >/dev/null  # a fresh coordinator: no dead workers known
# An address-space limit makes the allocation fail inside the rank (the kernel's OOM killer is not
# needed): LibTorch reports it and trm-train exits with its out-of-memory code.
(ulimit -v 2500000; exec "$BIN/trm-worker" --coordinator "127.0.0.1:$PORT" --id w5 --cpu-slots 1 \
  --work-dir "$WORK/w5" >>"$WORK/w5.log" 2>&1) &
PIDS+=("$!")
wait_for 20 "worker w5" workers_alive 1
JOB=$(submit oom 1 0 global_batch_size=8 max_steps=5 arch.hidden_size=16384 arch.num_heads=128)
wait_for 180 "oom job fails" state_is "$JOB" JOB_FAILED
ctl status "$JOB"
[ "$(field "$JOB" failure_kind)" = "oom" ] || fail "failure kind $(field "$JOB" failure_kind), expected oom"
echo "4. out of memory: ok"
stop_all

# ------------------------------------------------------------------------ 5. collective timeout
start_coordinator "$WORK/coord5"
ctl dataset push "$WORK/ds" --name example-chat >/dev/null  # a fresh coordinator: no dead workers known
for w in w6 w7; do
  (export TRM_COLLECTIVE_TIMEOUT_S=3; exec "$BIN/trm-worker" --coordinator "127.0.0.1:$PORT" --id "$w" --cpu-slots 1 \
    --work-dir "$WORK/$w" >>"$WORK/$w.log" 2>&1) &
  PIDS+=("$!")
done
wait_for 20 "workers w6 w7" workers_alive 2
JOB=$(submit timeout 2 0 global_batch_size=8 max_steps=300)
wait_for 120 "timeout job at step 5" step_at_least "$JOB" 5
FROZEN=$(pgrep -f "$WORK/w7/jobs/$JOB/attempt_1/" | head -n 1)
[ -n "$FROZEN" ] || fail "no rank process on w7"
kill -STOP "$FROZEN"
wait_for 90 "timeout job fails" state_is "$JOB" JOB_FAILED
ctl status "$JOB" | head -n 4
[ "$(field "$JOB" failure_kind)" = "timeout" ] || fail "failure kind $(field "$JOB" failure_kind), expected timeout"
MSG=$(field "$JOB" message)
[[ "$MSG" == *"timed out"* ]] || fail "the message does not say what timed out: $MSG"
wait_for 30 "the frozen rank is gone" bash -c "! kill -0 $FROZEN 2>/dev/null"
echo "5. collective timeout: ok"
echo "faults e2e: ok"
