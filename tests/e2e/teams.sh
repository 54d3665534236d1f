#!/usr/bin/env bash
# One coordinator shared by a team, over the real binaries on loopback (docs/control-plane.md#security):
#  - the four probes that used to succeed fail cleanly: bob cancelling alice's job, bob's push
#    changing what alice's dataset name means, a managed override (run_dir=...), and
#    --data-path /etc;
#  - data paths: inside a worker's --data-root a job trains; a symlink inside the root that
#    points outside it (as the data path, or below it) passes the coordinator's check by its
#    words and is refused by the worker;
#  - a quota holds a second job back and says so in trmctl status;
#  - trmctl list shows owners and filters --mine / --owner; the audit log holds the refusals;
#  - a hashed token works; SIGHUP drops a removed token from its next call on.
# Usage: teams.sh BIN_DIR SOURCE_DIR
set -euo pipefail
BIN="$1"; SRC="$2"
source "$(dirname "$0")/lib.sh"
as() { local who="$1"; shift; TRM_TOKEN="$(cat "$WORK/$who.token")" "$BIN/trmctl" "$@"; }
# `refused WHO EXPECTED_TEXT trmctl-args...`: the call must exit 1 with the text in its message.
refused() {
  local who="$1" want="$2"; shift 2
  local out rc=0
  out=$(as "$who" "$@" 2>&1) || rc=$?
  [ "$rc" = 1 ] || fail "$who: trmctl $* exited $rc (want 1): $out"
  echo "$out" | grep -q -- "$want" || fail "$who: trmctl $*: '$want' not in: $out"
  echo "refused as expected: $who trmctl $* -> $(echo "$out" | head -c 160)"
}

for u in alice bob root; do python3 -c 'import secrets; print("tok-" + secrets.token_hex(16))' >"$WORK/$u.token"; done
hash_of() { printf '%s' "$(cat "$WORK/$1.token")" | sha256sum | cut -d' ' -f1; }
write_tokens() {  # bob only when asked; alice's line holds her token's hash, not the token
  { echo "$(cat "$WORK/root.token") admin root"
    echo "sha256:$(hash_of alice) submit alice"
    if [ "${1:-}" = with-bob ]; then echo "$(cat "$WORK/bob.token") submit bob"; fi; } >"$WORK/tokens"
}
write_tokens with-bob
python3 -c 'import secrets; print(secrets.token_hex(16))' >"$WORK/worker.secret"

mkdir -p "$WORK/roots/data" "$WORK/outside"
PORT=$(free_port)
export TRM_COORDINATOR="127.0.0.1:$PORT"
"$BIN/trm-coordinator" --listen "127.0.0.1:$PORT" --data-dir "$WORK/coord" --heartbeat-interval-ms 300 \
  --config-dir "$SRC/configs" --auth-tokens "$WORK/tokens" --worker-secret-file "$WORK/worker.secret" \
  --quota-slots 'alice=1,*=2' >>"$WORK/coordinator.log" 2>&1 &
COORD=$!; PIDS+=("$COORD")
for _ in $(seq 1 100); do as root workers >/dev/null 2>&1 && break; sleep 0.1; done
# w1 reads data under the root (itself reached through a symlink); w2 has no root.
ln -s "$WORK/roots" "$WORK/rootlink"
TRM_WORKER_SECRET_FILE="$WORK/worker.secret" "$BIN/trm-worker" --coordinator "127.0.0.1:$PORT" --id w1 --cpu-slots 2 \
  --work-dir "$WORK/w1" --data-root "$WORK/rootlink/data" >"$WORK/w1.log" 2>&1 &
PIDS+=("$!")
TRM_WORKER_SECRET_FILE="$WORK/worker.secret" "$BIN/trm-worker" --coordinator "127.0.0.1:$PORT" --id w2 --cpu-slots 1 \
  --work-dir "$WORK/w2" >"$WORK/w2.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 1 100); do [ "$(as root workers 2>/dev/null | grep -c -E '^w[12] ')" = 2 ] && break; sleep 0.1; done
as root workers

"$BIN/trm-data" build --input "$SRC/examples/chat_example.json" --format sharegpt --tokenizer byte --max-length 64 \
  --train-split 0.9 --output-dir "$WORK/ds" >/dev/null
"$BIN/trm-data" build --input "$SRC/examples/chat_example.json" --format sharegpt --tokenizer byte --max-length 48 \
  --train-split 0.9 --output-dir "$WORK/bobds" >/dev/null
ALICE_HASH=$(as alice dataset push "$WORK/ds" --name ex | head -n 1 | cut -d' ' -f2)
as alice dataset push "$WORK/ds" --name ex | head -n 1 | grep -q '^alice/ex ' || fail "push does not name alice/ex"
BOB_HASH=$(as bob dataset push "$WORK/bobds" --name ex | head -n 1 | cut -d' ' -f2)
[ "$ALICE_HASH" != "$BOB_HASH" ] || fail "the two datasets have one hash"
refused bob "belongs to alice" dataset push "$WORK/bobds" --name alice/ex

TRAIN=(--config-name cfg_tiny --config-dir "$SRC/configs" global_batch_size=8 eval_interval=0 threads=1 log_interval=10)
# Long enough to be running through every probe below on any machine (it is cancelled then).
JOB=$(as alice submit "${TRAIN[@]}" --dataset ex --name alices epochs=100000 max_steps=100000 checkpoint_interval_steps=50)
as alice status "$JOB" | grep -E "^dataset: +alice/ex \(${ALICE_HASH:0:12}\)" || fail "alice's ex is not hers: $(as alice status "$JOB")"
as alice status "$JOB" | grep -q "^owner: *alice" || fail "no owner in status"
for _ in $(seq 1 300); do as alice status "$JOB" | grep -q "^state: *running" && break; sleep 0.2; done
as alice status "$JOB" | grep -q "^state: *running" || fail "alice's job does not run"

# The probes.
refused bob "belongs to alice" cancel "$JOB"
as root status "$JOB" | grep -q "^state: *running" || fail "bob's cancel stopped alice's job"
refused alice "'run_dir' is managed by the service" submit "${TRAIN[@]}" --dataset ex run_dir=/tmp/elsewhere
refused alice "--data-root" submit "${TRAIN[@]}" --data-path /etc
refused bob "no dataset bob/nothing" submit "${TRAIN[@]}" --dataset nothing
BOBS=$(as bob submit "${TRAIN[@]}" --dataset alice/ex --name bobs max_steps=2)  # reading is open
as bob status "$BOBS" | grep -q "(${ALICE_HASH:0:12})" || fail "alice/ex is not alice's for bob"

# Quota: alice holds her one slot, so her second job waits and says why.
WAITS=$(as alice submit "${TRAIN[@]}" --dataset ex --name waits max_steps=2)
for _ in $(seq 1 300); do as alice status "$WAITS" | grep -q "alice holds 1 of 1 slots" && break; sleep 0.2; done
as alice status "$WAITS" | grep -q "alice holds 1 of 1 slots" || fail "no quota warning: $(as alice status "$WAITS")"
as alice status "$WAITS" | grep -q "^state: *queued" || fail "the job over quota is not queued"

# Owners in list, and the filters.
as root list | head -n 1 | grep -q OWNER || fail "list has no OWNER column"
[ "$(as alice list --mine -o json | python3 -c 'import json,sys; print(sorted({j["owner"] for j in json.load(sys.stdin)["jobs"]}))')" = "['alice']" ] \
  || fail "--mine shows others' jobs"
[ "$(as alice list --owner bob -o json | python3 -c 'import json,sys; print(sorted({j["owner"] for j in json.load(sys.stdin)["jobs"]}))')" = "['bob']" ] \
  || fail "--owner bob shows others' jobs"
as alice cancel "$WAITS" >/dev/null
as alice cancel "$JOB" >/dev/null

# Data paths: inside the root (named through the symlinked root) a job trains on w1 only;
# a symlink inside the root pointing outside it is refused by the worker.
cp -r "$WORK/ds" "$WORK/roots/data/chat"
cp -r "$WORK/ds" "$WORK/outside/chat"
ln -s "$WORK/outside/chat" "$WORK/roots/data/escape"
INSIDE=$(as alice submit "${TRAIN[@]}" --data-path "$WORK/rootlink/data/chat" --name inside max_steps=2)
as alice watch "$INSIDE" >/dev/null 2>"$WORK/watch_inside.log" || fail "the job on a rooted data path failed: $(as alice status "$INSIDE")"
grep -q "assignment $INSIDE/" "$WORK/w1.log" || fail "the data-path job did not run on the worker with the root"
if grep -q "assignment $INSIDE/" "$WORK/w2.log"; then fail "a data-path job ran on a worker without a root"; fi
ESCAPE=$(as alice submit "${TRAIN[@]}" --data-path "$WORK/rootlink/data/escape" --name escape max_steps=2)
if as alice watch "$ESCAPE" >/dev/null 2>"$WORK/watch_escape.log"; then fail "a symlink out of the root was read"; fi
as alice status "$ESCAPE" | grep -q "outside this worker's --data-root" || fail "escape refused without the reason: $(as alice status "$ESCAPE")"
as alice status "$ESCAPE" | grep -q "^failure: *bad_input" || fail "escape is not bad_input"
# ... and so is a link further down (a tokenizer/ linked to a directory outside the root).
cp -r "$WORK/ds" "$WORK/roots/data/sneaky"
rm -rf "$WORK/roots/data/sneaky/tokenizer"
ln -s "$WORK/outside/chat/tokenizer" "$WORK/roots/data/sneaky/tokenizer"
SNEAKY=$(as alice submit "${TRAIN[@]}" --data-path "$WORK/rootlink/data/sneaky" --name sneaky max_steps=2)
if as alice watch "$SNEAKY" >/dev/null 2>"$WORK/watch_sneaky.log"; then fail "a link below the data path was followed out"; fi
as alice status "$SNEAKY" | grep -q "sneaky/tokenizer links to" || fail "sneaky refused without the reason: $(as alice status "$SNEAKY")"

# The audit log: admins only, refusals included.
refused bob "admins only\|needs the admin role" audit
AUDIT=$(as root audit -o json)
python3 - "$AUDIT" <<'PY' || fail "audit log: $AUDIT"
import json, sys
entries = json.loads(sys.argv[1])["entries"]
seen = {(e.get("principal", ""), e["method"], e["result"].split(":")[0]) for e in entries}
for want in [("bob", "CancelJob", "PERMISSION_DENIED"), ("bob", "PushDataset", "PERMISSION_DENIED"),
             ("alice", "SubmitJob", "INVALID_ARGUMENT"), ("alice", "SubmitJob", "FAILED_PRECONDITION"),
             ("alice", "CancelJob", "OK"), ("alice", "PushDataset", "OK")]:
    assert want in seen, (want, sorted(seen))
assert all(e.get("peer") for e in entries)
print(f"audit: {len(entries)} entries")
PY
as root audit --user bob | grep -q CancelJob || fail "audit --user bob"

# Tokens: bob's removed and SIGHUP sent: his next call is refused; alice's hashed one still works.
write_tokens
kill -HUP "$COORD"
for _ in $(seq 1 300); do as bob list >/dev/null 2>&1 || break; sleep 0.1; done
refused bob "unknown token" list
as alice list >/dev/null || fail "alice's hashed token stopped working"
write_tokens with-bob
as root admin reload-tokens | grep -q "reloaded: 3" || fail "trmctl admin reload-tokens"
as bob list >/dev/null || fail "bob's restored token is refused"
echo "teams e2e: ok"
