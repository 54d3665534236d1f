#!/usr/bin/env bash
# Preemption over the real binaries on loopback (CPU, Gloo): on a 2-slot service a 2-rank
# priority-5 job preempts a running 2-rank priority-0 job. The low one's ranks save a checkpoint
# when told to stop (no periodic ones), it waits in the queue (trmctl queue says why) and
# resumes from that checkpoint exactly; both succeed; the low one shows one preemption and no
# restart, and its final model.safetensors is byte-identical to the same job run undisturbed.
# The coordinator is SIGKILLed and started again while the preemption is in flight (the stop
# order persisted, the preempted ranks saving and uploading their checkpoint into the outage).
# Usage: preempt.sh BIN_DIR SOURCE_DIR
set -euo pipefail
BIN="$1"; SRC="$2"
source "$(dirname "$0")/lib.sh"
PORT=$(free_port); MPORT=$(free_port)
export TRM_COORDINATOR="127.0.0.1:$PORT"
start_coordinator() {
  "$BIN/trm-coordinator" --listen "127.0.0.1:$PORT" --data-dir "$WORK/coord" --heartbeat-interval-ms 300 \
    --metrics-listen "127.0.0.1:$MPORT" --config-dir "$SRC/configs" --preempt-grace-s 60 >>"$WORK/coordinator.log" 2>&1 &
  COORD=$!
  PIDS+=("$COORD")
}
start_coordinator
for _ in $(seq 1 100); do "$BIN/trmctl" workers >/dev/null 2>&1 && break; sleep 0.1; done
"$BIN/trm-worker" --coordinator "127.0.0.1:$PORT" --id w1 --cpu-slots 2 --work-dir "$WORK/w1" >"$WORK/w1.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 1 100); do "$BIN/trmctl" workers 2>/dev/null | grep -q '^w1 ' && break; sleep 0.1; done
"$BIN/trm-data" build --input "$SRC/examples/chat_example.json" --format sharegpt --tokenizer byte --max-length 64 \
  --train-split 0.9 --output-dir "$WORK/ds" >/dev/null
"$BIN/trmctl" dataset push "$WORK/ds" --name chat >/dev/null
# No periodic checkpoints: the one a preempted attempt resumes from is the one its ranks save
# when told to stop.
# 200 steps: however fast the machine, the low job is far from its end when it is preempted.
LOW_ARGS=(--config-name cfg_tiny --dataset chat --world-size 2 global_batch_size=8 max_steps=200
          checkpoint_interval_steps=0 eval_interval=0 threads=1 log_interval=10)
step_of() { "$BIN/trmctl" status "$1" -o json | python3 -c 'import json,sys; print(int(json.load(sys.stdin).get("step",0)))'; }
state_of() { "$BIN/trmctl" status "$1" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])'; }

LOW=$("$BIN/trmctl" submit "${LOW_ARGS[@]}" --name low)
for _ in $(seq 1 600); do [ "$(step_of "$LOW" 2>/dev/null || echo 0)" -ge 12 ] && break; sleep 0.2; done
[ "$(step_of "$LOW")" -ge 12 ] || fail "the low-priority job did not reach step 12"
HIGH=$("$BIN/trmctl" submit --config-name cfg_tiny --dataset chat --world-size 2 --priority 5 --name high \
       global_batch_size=8 max_steps=6 eval_interval=0 threads=1)
# The low one is told to stop. As soon as the coordinator has decided so, it dies and comes
# back: the preemption carries on from its store (whether or not the stop order went out).
message_of() { "$BIN/trmctl" status "$1" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin).get("message",""))'; }
# (On a fast machine the preemption may be over already: the restart is then an ordinary one.)
for _ in $(seq 1 600); do message_of "$LOW" 2>/dev/null | grep -qE "preempting attempt 1|preempted by" && break; sleep 0.05; done
message_of "$LOW" | grep -qE "preempting attempt 1|preempted by" || fail "the low-priority job is not being preempted: $(message_of "$LOW")"
echo "killing the coordinator; the low job's latest event: $(message_of "$LOW")"
kill -9 "$COORD"
wait "$COORD" 2>/dev/null || true
sleep 1
start_coordinator
for _ in $(seq 1 100); do "$BIN/trmctl" workers >/dev/null 2>&1 && break; sleep 0.1; done
# While it waits, the queue says why.
for _ in $(seq 1 1200); do [ "$(state_of "$LOW" 2>/dev/null)" = JOB_QUEUED ] && break; sleep 0.1; done
[ "$(state_of "$LOW")" = JOB_QUEUED ] || fail "the low-priority job was not preempted: $("$BIN/trmctl" status "$LOW")"
"$BIN/trmctl" queue | tee "$WORK/queue.txt"
grep -q "$LOW" "$WORK/queue.txt" || fail "the preempted job is not in the queue"
"$BIN/trmctl" watch "$HIGH" >/dev/null 2>"$WORK/watch_high.log" || fail "the high-priority job failed"
"$BIN/trmctl" watch "$LOW" --events >"$WORK/low_events.jsonl" 2>"$WORK/watch_low.log" || fail "the preempted job did not succeed"
"$BIN/trmctl" status "$LOW" | tee "$WORK/low_status.txt"
grep -q "^restarts: *0 of 0" "$WORK/low_status.txt" || fail "the preemption used a restart"
grep -q "^preempted: *1 time$" "$WORK/low_status.txt" || fail "no preemption recorded"
python3 - "$WORK/low_events.jsonl" "$HIGH" <<'PY' || fail "events of the preempted job"
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
msgs = [e["state"].get("message", "") for e in ev if "state" in e]
assert any("preempting attempt 1 for " + sys.argv[2] in m for m in msgs), msgs
assert any("preempted by " + sys.argv[2] in m for m in msgs), msgs
assert msgs[-1].startswith("finished at step 200"), msgs[-1]
# Attempt 2 resumed from the checkpoint both ranks saved when told to stop, mid-run.
resumed = [m for m in msgs if "attempt 2" in m and "resuming from step_" in m]
assert resumed, msgs
step = int(resumed[0].split("resuming from step_")[1].split()[0].rstrip(",)"))
assert 12 <= step < 200, resumed
print(f"preempted job resumed from step_{step}")
PY
curl -sf "http://127.0.0.1:$MPORT/metrics" | grep -E "^trm_job_preemptions_total\{job=\"$LOW\"\} 1" \
  || fail "trm_job_preemptions_total"

# The same job undisturbed: the same final weights, byte for byte.
same_weights_as_undisturbed "$LOW" preempted "${LOW_ARGS[@]}"
echo "preempt e2e: ok"
