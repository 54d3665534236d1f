#!/usr/bin/env bash
# Backup and restore over the real binaries on loopback: `trmctl admin backup` while a job
# runs (after its first checkpoints), then the coordinator and its worker are lost (SIGKILL, the
# data directory left behind). `trm-coordinator --restore` rebuilds the state in a new data
# directory; a new worker joins, the job resumes from the backup's latest checkpoint without
# using a restart, succeeds, and its final weights equal the same job run undisturbed, byte for
# byte. Also: a restore never replaces a live state, and a data directory of a newer schema is
# refused and left unchanged.
# Usage: backup.sh BIN_DIR SOURCE_DIR
set -euo pipefail
BIN="$1"; SRC="$2"
source "$(dirname "$0")/lib.sh"
start_coordinator() {  # DATA_DIR [flags...]
  local dir="$1"; shift
  PORT=$(free_port)
  export TRM_COORDINATOR="127.0.0.1:$PORT"
  "$BIN/trm-coordinator" --listen "127.0.0.1:$PORT" --data-dir "$dir" --heartbeat-interval-ms 300 \
    --config-dir "$SRC/configs" "$@" >>"$WORK/coordinator.log" 2>&1 &
  COORD=$!; PIDS+=("$COORD")
  for _ in $(seq 1 100); do "$BIN/trmctl" workers >/dev/null 2>&1 && return 0; sleep 0.1; done
  fail "the coordinator did not come up"
}
start_worker() {  # ID
  "$BIN/trm-worker" --coordinator "127.0.0.1:$PORT" --id "$1" --cpu-slots 1 --work-dir "$WORK/$1" >"$WORK/$1.log" 2>&1 &
  WORKER=$!; PIDS+=("$WORKER")
  for _ in $(seq 1 100); do "$BIN/trmctl" workers 2>/dev/null | grep -q "^$1 " && return 0; sleep 0.1; done
  fail "worker $1 did not register"
}
step_of() { "$BIN/trmctl" status "$1" -o json | python3 -c 'import json,sys; print(int(json.load(sys.stdin).get("step",0)))'; }

start_coordinator "$WORK/coord"
start_worker w1
"$BIN/trm-data" build --input "$SRC/examples/chat_example.json" --format sharegpt --tokenizer byte --max-length 64 \
  --train-split 0.9 --output-dir "$WORK/ds" >/dev/null
"$BIN/trmctl" dataset push "$WORK/ds" --name chat >/dev/null
# 300 steps: however fast the machine, the job is far from its end when the backup is taken.
ARGS=(--config-name cfg_tiny --dataset chat global_batch_size=8 max_steps=300 checkpoint_interval_steps=10
      eval_interval=0 threads=1 log_interval=10)
JOB=$("$BIN/trmctl" submit "${ARGS[@]}" --name backed-up)
for _ in $(seq 1 600); do [ "$(step_of "$JOB" 2>/dev/null || echo 0)" -ge 20 ] && break; sleep 0.2; done
[ "$(step_of "$JOB")" -ge 20 ] || fail "the job did not reach step 20"
"$BIN/trmctl" admin backup "$WORK/backup.tar" | tee "$WORK/backup.txt"
grep -qE "^backup backup-[0-9]+ written to $WORK/backup.tar: [0-9]+ files" "$WORK/backup.txt" || fail "backup output"
"$BIN/trmctl" admin backup "$WORK/backup.tar" >/dev/null 2>&1 && fail "a backup replaced an existing file without --force"
[ -e "$WORK/backup.tar.partial" ] && fail "a partial backup was left behind"
# The job's latest checkpoint in the backup (the live job may have saved more since).
AT_BACKUP=$(python3 - "$WORK/backup.tar" "$JOB" <<'PY'
import json, sys, tarfile
t = tarfile.open(sys.argv[1])
names = t.getnames()
assert names[0] == "trm-backup.json" and names[1] == "coordinator.db", names[:2]
manifest = json.load(t.extractfile("trm-backup.json"))
assert [f["path"] for f in manifest["files"]] == names[1:], "the members are not the manifest's files"
assert any(n.startswith("datasets/") and n.endswith(".manifest") for n in names), names
steps = [int(n.split("/")[2][5:]) for n in names
         if n.startswith(f"checkpoints/{sys.argv[2]}/step_") and n.endswith("/model.safetensors")]
assert steps and min(steps) >= 10, names
print(f"step_{max(steps)}")
PY
) || fail "the backup's contents"
# Lost: the coordinator and the worker die; the job runs on nowhere.
for _ in $(seq 1 600); do [ "$(step_of "$JOB" 2>/dev/null || echo 0)" -ge 40 ] && break; sleep 0.2; done
kill -9 "$COORD" "$WORKER"
wait "$COORD" "$WORKER" 2>/dev/null || true
pkill -9 -f "$WORK/w1/" 2>/dev/null || true

# The job waits until w1 (which may still be running the void attempt) reports or is lost.
start_coordinator "$WORK/restored" --restore "$WORK/backup.tar" --heartbeat-timeout-s 3
grep -q "restored $WORK/backup.tar into $WORK/restored" "$WORK/coordinator.log" || fail "no restore logged"
[ "$("$BIN/trmctl" status "$JOB" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')" = JOB_QUEUED ] \
  || fail "the restored job is not queued again: $("$BIN/trmctl" status "$JOB")"
start_worker w2
"$BIN/trmctl" watch "$JOB" --events >"$WORK/events.jsonl" 2>"$WORK/watch.log" || fail "the restored job did not succeed"
"$BIN/trmctl" status "$JOB" | tee "$WORK/status_done.txt"
grep -q "^restarts: *0 of " "$WORK/status_done.txt" || fail "the restore used a restart"
python3 - "$WORK/events.jsonl" "$AT_BACKUP" <<'PY' || fail "events of the restored job"
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
msgs = [e["state"].get("message", "") for e in ev if "state" in e]
assert any("attempt 1 void (the coordinator was restored from a backup" in m for m in msgs), msgs
resumed = [m for m in msgs if "attempt 2" in m and "resuming from " + sys.argv[2] in m]
assert resumed, (sys.argv[2], msgs)
assert msgs[-1].startswith("finished at step 300"), msgs[-1]
PY

# The same job undisturbed: the same final weights, byte for byte.
same_weights_as_undisturbed "$JOB" restored "${ARGS[@]}"
kill -TERM "$COORD"; wait "$COORD" || true

# Never over a live state.
OUT=$(timeout 30 "$BIN/trm-coordinator" --listen 127.0.0.1:0 --data-dir "$WORK/restored" --restore "$WORK/backup.tar" 2>&1) \
  && fail "a restore replaced a live state"
echo "$OUT" | grep -q "coordinator.db exists; restore into a new" || fail "the refusal: $OUT"

# A newer release's data directory: refused, unchanged.
python3 -c 'import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute("PRAGMA user_version = 99"); c.commit()' \
  "$WORK/restored/coordinator.db"
BEFORE=$(sha256sum "$WORK/restored/coordinator.db" | cut -d' ' -f1)
OUT=$(timeout 30 "$BIN/trm-coordinator" --listen 127.0.0.1:0 --data-dir "$WORK/restored" 2>&1) && fail "a newer schema was opened"
echo "$OUT" | grep -q "schema version 99, newer than this trm-coordinator's" || fail "the refusal: $OUT"
[ "$(sha256sum "$WORK/restored/coordinator.db" | cut -d' ' -f1)" = "$BEFORE" ] || fail "the refused database changed"
echo "backup e2e: ok"
