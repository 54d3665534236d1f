#!/usr/bin/env bash
# The control plane end to end over the real binaries on loopback (CPU, Gloo):
#  - a coordinator and two workers (one CPU slot each); a dataset pushed with trmctl;
#  - a 2-rank job submitted, watched to completion by one watcher from the start and by a
#    second one attached mid-run at a resume point; both see the same events, numbered
#    without gaps;
#  - the metrics endpoint shows the job's step and loss;
#  - the coordinator is SIGKILLed mid-job and restarted on the same state: the job, its events
#    and checkpoints survive and the job finishes;
#  - the final checkpoint is pulled (SHA-256 checked) and loaded by trm-generate.
# Usage: control_plane.sh BIN_DIR SOURCE_DIR
set -euo pipefail
BIN="$1"; SRC="$2"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  pkill -9 -f "$WORK/" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$WORK"/*.log; do echo "--- $f"; tail -n 30 "$f"; done; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

PORT=$(free_port); MPORT=$(free_port)
export TRM_COORDINATOR="127.0.0.1:$PORT"
start_coordinator() {
  "$BIN/trm-coordinator" --listen "127.0.0.1:$PORT" --data-dir "$WORK/coord" --metrics-listen "127.0.0.1:$MPORT" \
    --heartbeat-interval-ms 300 --config-dir "$SRC/configs" >>"$WORK/coordinator.log" 2>&1 &
  COORD=$!; PIDS+=("$COORD")
  for _ in $(seq 1 100); do "$BIN/trmctl" workers >/dev/null 2>&1 && return 0; sleep 0.1; done
  fail "coordinator did not come up"
}
start_coordinator
for w in w1 w2; do
  "$BIN/trm-worker" --coordinator "127.0.0.1:$PORT" --id "$w" --cpu-slots 1 --work-dir "$WORK/$w" \
    >"$WORK/$w.log" 2>&1 &
  PIDS+=("$!")
done
for _ in $(seq 1 100); do
  [ "$("$BIN/trmctl" workers 2>/dev/null | grep -c -E '^w[12] ')" = 2 ] && break; sleep 0.1
done
"$BIN/trmctl" workers

"$BIN/trm-data" build --input "$SRC/examples/chat_example.json" --format sharegpt --tokenizer byte --max-length 64 \
  --train-split 0.9 --output-dir "$WORK/ds" >/dev/null
"$BIN/trmctl" dataset push "$WORK/ds" --name example-chat

JOB=$("$BIN/trmctl" submit --config-name cfg_tiny --config-dir "$SRC/configs" --dataset example-chat --world-size 2 \
      --name e2e global_batch_size=8 max_steps=60 checkpoint_interval_steps=10 eval_interval=0 threads=1 log_interval=10)
echo "submitted $JOB"
"$BIN/trmctl" watch "$JOB" --events --logs --reconnect-s 120 >"$WORK/watch1.jsonl" 2>"$WORK/watch1.log" &
W1=$!; PIDS+=("$W1")

step_of() { "$BIN/trmctl" status "$JOB" --json | python3 -c 'import json,sys; print(int(json.load(sys.stdin).get("step",0)))'; }
wait_step() {  # step, seconds
  for _ in $(seq 1 $(($2 * 5))); do [ "$(step_of 2>/dev/null || echo 0)" -ge "$1" ] && return 0; sleep 0.2; done
  fail "job did not reach step $1"
}
wait_step 12 180

# The metrics endpoint knows the job.
METRICS=$(curl -sf "http://127.0.0.1:$MPORT/metrics") || fail "no metrics endpoint"
echo "$METRICS" | grep -E "^trm_job_step\{job=\"$JOB\"\} [0-9]+" || fail "trm_job_step missing"
echo "$METRICS" | grep -E "^trm_job_loss\{job=\"$JOB\"\} [0-9.e+-]+" || fail "trm_job_loss missing"
echo "$METRICS" | grep -E '^trm_workers\{state="alive"\} 2' || fail "trm_workers missing"

# A second watcher resumes after the first watcher's 5th event.
RESUME=$(python3 -c 'import json,sys; print([json.loads(l)["seq"] for l in open(sys.argv[1])][4])' "$WORK/watch1.jsonl")
"$BIN/trmctl" watch "$JOB" --events --logs --after-seq "$RESUME" --reconnect-s 120 >"$WORK/watch2.jsonl" 2>"$WORK/watch2.log" &
W2=$!; PIDS+=("$W2")

# Kill the coordinator mid-job; restart it on the same state.
"$BIN/trmctl" checkpoints "$JOB"
kill -9 "$COORD"; wait "$COORD" 2>/dev/null || true
echo "coordinator killed at step $(tail -n 1 "$WORK/watch1.jsonl" | head -c 200)"
sleep 1
start_coordinator
"$BIN/trmctl" status "$JOB" | head -n 5

wait "$W1" || fail "watcher 1 did not see the job succeed"
wait "$W2" || fail "watcher 2 did not see the job succeed"
"$BIN/trmctl" status "$JOB"
"$BIN/trmctl" checkpoints "$JOB"

python3 - "$WORK/watch1.jsonl" "$WORK/watch2.jsonl" "$RESUME" <<'PY' || fail "watch streams differ"
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
resume = int(sys.argv[3])
seqs = [e["seq"] for e in a]
assert seqs == list(range(1, len(seqs) + 1)), "watcher 1 has gaps or repeats"
assert [e for e in a if e["seq"] > resume] == b, "watcher 2 differs from watcher 1 after the resume point"
states = [e["state"]["state"] for e in a if "state" in e]
assert states[-1] == "JOB_SUCCEEDED", states
steps = [e["metrics"]["step"] for e in a if "metrics" in e and not e["metrics"].get("eval")]
assert steps[-1] == 60 or int(steps[-1]) == 60, steps[-5:]
print(f"{len(a)} events, watcher 2 resumed after {resume} with {len(b)}; states {states}")
PY

"$BIN/trmctl" pull "$JOB" --select latest -o "$WORK/pulled"
[ -f "$WORK/pulled/model.safetensors" ] || fail "pulled checkpoint has no model"
grep -q '"step": *60' "$WORK/pulled/state.json" || fail "pulled checkpoint is not the final step"
OUT=$("$BIN/trm-generate" --checkpoint "$WORK/pulled" --prompt "Hello!" --temperature 0 --max-new-tokens 16 2>"$WORK/generate.log") \
  || fail "trm-generate could not load the pulled checkpoint"
echo "generated: $OUT"
BAD=$("$BIN/trmctl" pull "$JOB" --select step:999 -o "$WORK/none" 2>&1) && fail "pulled a checkpoint that does not exist"
echo "$BAD" | grep -q "no such checkpoint" || fail "bad selector: $BAD"
# A run shorter than its data: each worker fetches only the rows its rank reads (a shard).
SHORT=$("$BIN/trmctl" submit --config-name cfg_tiny --config-dir "$SRC/configs" --dataset example-chat --world-size 2 \
        --name short global_batch_size=8 max_steps=2 eval_interval=0 threads=1)
"$BIN/trmctl" watch "$SHORT" >/dev/null 2>"$WORK/watch_short.log" || fail "the short job did not succeed"
for w in w1 w2; do
  SHARD=$(ls -d "$WORK/$w/cache/datasets/"*-shard-* 2>/dev/null | head -n 1)
  [ -n "$SHARD" ] || fail "$w fetched no shard: $(ls "$WORK/$w/cache/datasets")"
  python3 - "$SHARD" <<'PY' || fail "$w's shard is not the rows of one rank"
import ast, json, sys
def npy_shape(path):  # the .npy header (no numpy needed)
    with open(path, "rb") as f:
        assert f.read(6) == b"\x93NUMPY"
        major = f.read(2)[0]
        n = int.from_bytes(f.read(2 if major == 1 else 4), "little")
        return ast.literal_eval(f.read(n).decode("latin1"))["shape"]
d = sys.argv[1]
ids = npy_shape(d + "/train/shard_rows.npy")[0]
rows = json.load(open(d + "/train/shard.json"))["rows"]
assert ids == 8 and rows > ids, (ids, rows)  # 2 steps x 4 rows of this rank
assert npy_shape(d + "/train/all__inputs.npy")[0] == 8
print(f"{d.split('/')[-1][:20]}...: {ids} of {rows} training rows")
PY
done
echo "control plane e2e: ok"
