#!/usr/bin/env bash
# Upgrading data directories of earlier releases (upgrade_fixture/, made by make_fixture.sh):
# data-2026-12-01, from before owners and namespaces: the current coordinator keeps every job,
# event, dataset and checkpoint, owned by `local`; names that were global resolve for `local` as
# before and as local/NAME for everyone else. data-2026-12-02, from before schema versions:
# migrated to version 2 with everything in it, and a new job runs on it.
# Usage: upgrade.sh BIN_DIR SOURCE_DIR
set -euo pipefail
BIN="$1"; SRC="$2"
source "$(dirname "$0")/lib.sh"
cp -a "$SRC/tests/e2e/upgrade_fixture/data-2026-12-01" "$WORK/coord"
HASH=541c70ce20b2ce329e836c6df1bcae99c85040ef6155a661d889fb827e395e09
PORT=$(free_port)
export TRM_COORDINATOR="127.0.0.1:$PORT"
start() {
  "$BIN/trm-coordinator" --listen "127.0.0.1:$PORT" --data-dir "$WORK/coord" --heartbeat-interval-ms 300 \
    --config-dir "$SRC/configs" "$@" >>"$WORK/coordinator.log" 2>&1 &
  COORD=$!; PIDS+=("$COORD")
  for _ in $(seq 1 100); do "$BIN/trmctl" workers >/dev/null 2>&1 && return 0; sleep 0.1; done
  fail "coordinator did not come up"
}
HPORT=$(free_port)
start --http-listen "127.0.0.1:$HPORT"
"$BIN/trmctl" list
# The state events of the old jobs were indexed once on opening: the dashboard lists them.
curl -sf "http://127.0.0.1:$HPORT/api/jobs/job-000001" | python3 -c '
import json, sys
states = [e["state"]["state"] for e in json.load(sys.stdin)["states"]]
assert states[0] == "JOB_QUEUED" and states[-1] == "JOB_SUCCEEDED" and "JOB_RUNNING" in states, states
' || fail "the old job's state events are not indexed for the dashboard"
"$BIN/trmctl" list -o json | python3 -c '
import json, sys
jobs = {j["id"]: j for j in json.load(sys.stdin)["jobs"]}
assert set(jobs) == {"job-000001", "job-000002"}, jobs.keys()
assert jobs["job-000001"]["state"] == "JOB_SUCCEEDED" and jobs["job-000001"]["step"] == "2", jobs["job-000001"]
assert jobs["job-000002"]["state"] == "JOB_CANCELLED"
assert {j["owner"] for j in jobs.values()} == {"local"}
' || fail "the old jobs are not all there, owned by local"
"$BIN/trmctl" watch job-000001 --events >"$WORK/events.jsonl" || fail "the old job's events do not end in success"
python3 - "$WORK/events.jsonl" <<'PY' || fail "events"
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
seqs = [e["seq"] for e in ev]  # log lines (not asked for) leave gaps
assert seqs == sorted(set(seqs)) and seqs[0] == 1, seqs
assert sum("checkpoint" in e for e in ev) == 2, ev
assert ev[-1]["state"]["state"] == "JOB_SUCCEEDED", ev[-1]
PY
[ "$("$BIN/trmctl" checkpoints job-000001 -o json | python3 -c 'import json,sys; print(" ".join(c["name"] for c in json.load(sys.stdin)["checkpoints"]))')" = "step_1 step_2" ] \
  || fail "the old checkpoints: $("$BIN/trmctl" checkpoints job-000001)"
"$BIN/trmctl" pull job-000001 --select step:2 -o "$WORK/pulled" >/dev/null || fail "the old checkpoint cannot be pulled"
grep -q '"step": *2' "$WORK/pulled/state.json" || fail "pulled the wrong checkpoint"
"$BIN/trmctl" dataset list | grep -E "^local/ex +${HASH:0:12}" || fail "the old dataset: $("$BIN/trmctl" dataset list)"

# Names: local's as before; with auth, another user names it local/ex.
"$BIN/trm-worker" --coordinator "127.0.0.1:$PORT" --id w1 --cpu-slots 1 --work-dir "$WORK/w1" >"$WORK/w1.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 1 100); do "$BIN/trmctl" workers 2>/dev/null | grep -q '^w1 ' && break; sleep 0.1; done
JOB=$("$BIN/trmctl" submit --config-name cfg_tiny --dataset ex --name after-upgrade global_batch_size=8 max_steps=2 \
      eval_interval=0 threads=1 arch.hidden_size=16 arch.num_heads=2 arch.L_layers=1 arch.halt_max_steps=2)
"$BIN/trmctl" watch "$JOB" >/dev/null 2>"$WORK/watch.log" || fail "a job on the old dataset failed: $("$BIN/trmctl" status "$JOB")"
"$BIN/trmctl" status "$JOB" | grep -qE "^dataset: +local/ex \(${HASH:0:12}\)" || fail "ex is not local's"
kill -TERM "$COORD"; wait "$COORD" || true
python3 -c 'import secrets; print("tok-" + secrets.token_hex(16), "submit alice")' >"$WORK/tokens"
export TRM_TOKEN="$(cut -d' ' -f1 "$WORK/tokens")"
start --auth-tokens "$WORK/tokens"
for _ in $(seq 1 100); do "$BIN/trmctl" workers 2>/dev/null | grep -q '^w1 .* yes' && break; sleep 0.2; done
OUT=$("$BIN/trmctl" submit --config-name cfg_tiny --dataset ex max_steps=2 2>&1) && fail "alice's ex resolved to local's"
echo "$OUT" | grep -q "local/ex" || fail "the refusal does not point at local/ex: $OUT"
ALICE=$("$BIN/trmctl" submit --config-name cfg_tiny --dataset local/ex --name alice-on-local global_batch_size=8 \
        max_steps=2 eval_interval=0 threads=1 arch.hidden_size=16 arch.num_heads=2 arch.L_layers=1 arch.halt_max_steps=2)
"$BIN/trmctl" status "$ALICE" | grep -q "^owner: *alice" || fail "the new job is not alice's"
OUT=$("$BIN/trmctl" cancel job-000001 2>&1) && fail "alice cancelled local's job"
echo "$OUT" | grep -q "belongs to local" || fail "cancel refusal: $OUT"
"$BIN/trmctl" cancel "$ALICE" >/dev/null
kill -TERM "$COORD"; wait "$COORD" || true
unset TRM_TOKEN

# The release before schema versions (upgrade_fixture/data-2026-12-02, schema version 1): migrated
# forward once, in place; its jobs, metrics, events and checkpoints intact; a new job runs on it.
cp -a "$SRC/tests/e2e/upgrade_fixture/data-2026-12-02" "$WORK/coord2"
PORT=$(free_port)
export TRM_COORDINATOR="127.0.0.1:$PORT"
"$BIN/trm-coordinator" --listen "127.0.0.1:$PORT" --data-dir "$WORK/coord2" --heartbeat-interval-ms 300 \
  --config-dir "$SRC/configs" >"$WORK/coordinator2.log" 2>&1 &
COORD=$!; PIDS+=("$COORD")
for _ in $(seq 1 100); do "$BIN/trmctl" workers >/dev/null 2>&1 && break; sleep 0.1; done
grep -q "migrated the schema from version 1 to 2" "$WORK/coordinator2.log" || fail "no schema migration logged"
python3 -c 'import sqlite3, sys; v = sqlite3.connect(sys.argv[1]).execute("PRAGMA user_version").fetchone()[0]; sys.exit(v != 2)' \
  "$WORK/coord2/coordinator.db" || fail "the data directory's schema version is not 2"
"$BIN/trmctl" list -o json | python3 -c '
import json, sys
jobs = {j["id"]: j for j in json.load(sys.stdin)["jobs"]}
assert jobs["job-000001"]["state"] == "JOB_SUCCEEDED" and jobs["job-000001"]["step"] == "2", jobs
assert jobs["job-000002"]["state"] == "JOB_CANCELLED", jobs
' || fail "the 2026-12-02 jobs"
"$BIN/trmctl" metrics job-000001 --format json | python3 -c '
import json, sys
points = json.load(sys.stdin)["points"]
assert [int(p["step"]) for p in points] == [1, 2], points
' || fail "the 2026-12-02 job's metrics"
"$BIN/trmctl" watch job-000001 --events >"$WORK/events2.jsonl" || fail "the 2026-12-02 job's events"
[ "$(grep -c '"metrics"' "$WORK/events2.jsonl")" -ge 2 ] || fail "the 2026-12-02 job's metrics events"
"$BIN/trmctl" pull job-000001 --select step:2 -o "$WORK/pulled2" >/dev/null || fail "the 2026-12-02 checkpoint"
"$BIN/trm-worker" --coordinator "127.0.0.1:$PORT" --id w2 --cpu-slots 1 --work-dir "$WORK/w2" >"$WORK/w2.log" 2>&1 &
PIDS+=("$!")
JOB=$("$BIN/trmctl" submit --config-name cfg_tiny --dataset ex --name after-migration global_batch_size=8 max_steps=3 \
      eval_interval=0 threads=1 arch.hidden_size=16 arch.num_heads=2 arch.L_layers=1 arch.halt_max_steps=2)
"$BIN/trmctl" watch "$JOB" >/dev/null 2>"$WORK/watch2.log" || fail "a job on the migrated data directory failed"
echo "upgrade e2e: ok"
