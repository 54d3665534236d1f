#!/usr/bin/env bash
# Evaluation runs end to end over the real binaries on loopback (CPU): a coordinator, worker A
# (one CPU slot), two datasets built from the two shared ones (the same byte tokenizer and
# length, so one checkpoint fits both):
#  - a tiny job trained with --eval-dataset SECOND: each checkpoint it uploads gets an evaluation
#    run (trm-eval) after the training, and its result lands on the checkpoint's record;
#  - trmctl eval JOB --select latest --dataset SECOND while only A is up; once its trm-eval has
#    started on A (held at its start, so it cannot finish first), A's agent and it are SIGKILLed;
#    worker B starts, the coordinator declares A lost and runs the evaluation again on B; its
#    result is on the checkpoint (trmctl checkpoints) and in /metrics (trm_checkpoint_eval);
#  - trmctl eval --prompts: trm-eval generate on a pushed prompts file, on the checkpoint too;
#  - pull --weights-only: only the weights files and a manifest that verifies them (trm-eval
#    loads it); the bytes saved against a full pull are printed.
# Usage: eval_service.sh BIN_DIR SOURCE_DIR SHARED_DIR
set -euo pipefail
BIN="$1"; SRC="$2"; SHARED="$3"
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
field() {  # JOB KEY: a field of `trmctl status --json`
  "$BIN/trmctl" status "$1" --json | python3 -c "import json,sys; print(json.load(sys.stdin).get('$2', ''))"
}
wait_for() {  # SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.2 s
  local n=$(($1 * 5)) what="$2"; shift 2
  for _ in $(seq 1 "$n"); do "$@" && return 0; sleep 0.2; done
  fail "timed out after ${n}x0.2 s waiting for: $what"
}
[ -x "$BIN/trm-eval" ] || fail "$BIN/trm-eval is not built"

PORT=$(free_port); MPORT=$(free_port)
export TRM_COORDINATOR="127.0.0.1:$PORT"
"$BIN/trm-coordinator" --listen "127.0.0.1:$PORT" --data-dir "$WORK/coord" --metrics-listen "127.0.0.1:$MPORT" \
  --heartbeat-interval-ms 200 --heartbeat-timeout-s 3 --config-dir "$SRC/configs" \
  --keep-best 'eval[second]:lm_loss' >"$WORK/coordinator.log" 2>&1 &
PIDS+=("$!")
wait_for 20 "the coordinator" "$BIN/trmctl" workers
start_worker() {  # ID [trm-worker options]
  local id="$1"; shift
  "$BIN/trm-worker" --coordinator "127.0.0.1:$PORT" --id "$id" --cpu-slots 1 --work-dir "$WORK/$id" \
    --heartbeat-ms 200 "$@" >"$WORK/$id.log" 2>&1 &
  LAST_WORKER=$!; PIDS+=("$LAST_WORKER")
}
worker_alive() { "$BIN/trmctl" workers | grep -qE "^$1 .* yes "; }
# Worker A's trm-eval: the real one, held at its start while $WORK/hold exists (below).
printf '%s\n' '#!/usr/bin/env bash' \
  "if [ -e '$WORK/hold' ]; then" \
  "  echo \$\$ > '$WORK/held.tmp' && mv '$WORK/held.tmp' '$WORK/held'" \
  "  while [ -e '$WORK/hold' ]; do sleep 0.1; done" \
  'fi' \
  "exec '$BIN/trm-eval' \"\$@\"" >"$WORK/held-trm-eval"
chmod +x "$WORK/held-trm-eval"
start_worker wa --eval-binary "$WORK/held-trm-eval"; WA=$LAST_WORKER
wait_for 20 "worker wa" worker_alive wa

# Two datasets of one vocabulary and length: training on the ShareGPT file, evaluation on the Alpaca one.
"$BIN/trm-data" build --input "$SHARED/data/sharegpt_fastchat_dummy.json" --format sharegpt --tokenizer byte \
  --max-length 64 --train-split 0.9 --no-progress --output-dir "$WORK/ds_train" >"$WORK/data.log" 2>&1
"$BIN/trm-data" build --input "$SHARED/data/alpaca_gpteacher_roleplay.json" --format alpaca --tokenizer byte \
  --max-length 64 --train-split 0.97 --no-progress --output-dir "$WORK/ds_second" >>"$WORK/data.log" 2>&1
"$BIN/trmctl" dataset push "$WORK/ds_train" --name chat
"$BIN/trmctl" dataset push "$WORK/ds_second" --name second

# --- every uploaded checkpoint is evaluated on SECOND, after the training
JOB=$("$BIN/trmctl" submit --config-name cfg_tiny --config-dir "$SRC/configs" --dataset chat --eval-dataset second \
      --name evaluated global_batch_size=8 max_steps=20 checkpoint_interval_steps=10 eval_interval=0 threads=1 \
      log_interval=10)
echo "submitted $JOB"
timeout 120 "$BIN/trmctl" watch "$JOB" >"$WORK/watch.log" 2>&1 || fail "the training job did not succeed"
auto_runs_done() {
  "$BIN/trmctl" list -o json | python3 -c '
import json, sys
evals = [j for j in json.load(sys.stdin)["jobs"] if j.get("kind") == "eval"]
bad = [j for j in evals if j["state"] in ("JOB_FAILED", "JOB_CANCELLED")]
assert not bad, bad
sys.exit(0 if len(evals) == 2 and all(j["state"] == "JOB_SUCCEEDED" for j in evals) else 1)'
}
wait_for 90 "the two automatic evaluation runs" auto_runs_done
"$BIN/trmctl" list
"$BIN/trmctl" checkpoints "$JOB" | tee "$WORK/checkpoints1.txt"
for s in step_10 step_20; do
  grep -E "^$s .*eval\[second\]:lm_loss=[0-9.]+ .*eval\[second\]:accuracy=" "$WORK/checkpoints1.txt" >/dev/null \
    || fail "$s has no evaluation result on second"
done

# --- trmctl eval; its worker dies while trm-eval runs; the run is rescheduled on worker B
# Worker A's trm-eval is held at its start while $WORK/hold exists (then it runs the real one), so
# the run is certainly still running on A when A dies: no race with a fast evaluation.
touch "$WORK/hold"
RUN=$("$BIN/trmctl" eval "$JOB" --select latest --dataset second)
echo "evaluation run $RUN"
[ "$(field "$RUN" kind)" = "eval" ] || fail "$RUN is not an evaluation run"
wait_for 60 "$RUN's trm-eval to start on wa" test -e "$WORK/held"
EVAL_PID=$(cat "$WORK/held")
[ "$(field "$RUN" state)" = "JOB_RUNNING" ] || fail "$RUN is not running: $(field "$RUN" state)"
"$BIN/trmctl" status "$RUN" | grep -E "placement: +rank 0 on wa" || fail "$RUN is not on wa"
kill -9 "$WA" "$EVAL_PID"
start_worker wb
on_wb() { "$BIN/trmctl" status "$RUN" | grep -qE "placement: +rank 0 on wb"; }
run_succeeded() { [ "$(field "$RUN" state)" = "JOB_SUCCEEDED" ]; }
wait_for 60 "$RUN rescheduled on wb" on_wb
wait_for 60 "$RUN to succeed on wb" run_succeeded
"$BIN/trmctl" status "$RUN" | tee "$WORK/run_status.txt"
grep -E "failure: +lost_worker" "$WORK/run_status.txt" >/dev/null || fail "$RUN was not restarted for its lost worker"
grep -E "restarts: +1 of" "$WORK/run_status.txt" >/dev/null || fail "$RUN was not restarted once"
"$BIN/trmctl" checkpoints "$JOB" --json | python3 -c '
import json, sys
run = sys.argv[1]
cps = {c["name"]: c for c in json.load(sys.stdin)["checkpoints"]}
evals = cps["step_20"].get("evals", [])
mine = [e for e in evals if e.get("eval_job_id") == run]
assert mine, evals
m = mine[0]["metrics"]
for k in ("lm_loss", "accuracy", "exact_accuracy", "q_halt_accuracy", "q_halt_loss", "steps", "count", "token_loss", "perplexity"):
    assert k in m, (k, m)
assert mine[0]["dataset"] == "second" and mine[0]["split"] == "test", mine[0]
print("step_20 on second:", {k: round(v, 4) for k, v in sorted(m.items())})
' "$RUN" || fail "the rescheduled run's result is not on step_20"
METRICS=$(curl -sf "http://127.0.0.1:$MPORT/metrics") || fail "no metrics endpoint"
echo "$METRICS" | grep -E "^trm_checkpoint_eval\{checkpoint=\"step_20\",dataset=\"second\",job=\"$JOB\",metric=\"lm_loss\"\} [0-9.e+-]+" \
  || fail "trm_checkpoint_eval of step_20 missing: $(echo "$METRICS" | grep trm_checkpoint_eval | head -n 5)"
"$BIN/trmctl" pull "$JOB" --select 'best:eval[second]:lm_loss' -o "$WORK/best" >/dev/null \
  || fail "best:eval[second]:lm_loss does not select a checkpoint"

# --- generation on a pushed prompts file (trm-eval generate), recorded as eval[qa/generate]
mkdir -p "$WORK/qa"
printf '%s\n' '{"prompt": "Hello!", "reference": "Hi"}' '{"prompt": "What is 2+2?", "reference": "4"}' \
  >"$WORK/qa/prompts.jsonl"
"$BIN/trmctl" dataset push "$WORK/qa" --name qa --prompts >/dev/null
GEN=$("$BIN/trmctl" eval "$JOB" --select step:20 --prompts qa)
gen_succeeded() { [ "$(field "$GEN" state)" = "JOB_SUCCEEDED" ]; }
wait_for 60 "the generation run $GEN" gen_succeeded
"$BIN/trmctl" checkpoints "$JOB" | grep -E "^step_20 .*eval\[qa/generate\]:exact_match=[0-9.]+ eval\[qa/generate\]:f1=" \
  >/dev/null || fail "step_20 has no generation result: $("$BIN/trmctl" checkpoints "$JOB")"

# --- pull --weights-only: the weights files and a manifest that verifies them
"$BIN/trmctl" pull "$JOB" --select step:20 -o "$WORK/full"
"$BIN/trmctl" pull "$JOB" --select step:20 --weights-only -o "$WORK/weights"
python3 - "$WORK/full" "$WORK/weights" <<'PY' || fail "the weights-only checkpoint is not what it should be"
import hashlib, json, os, sys
full, weights = sys.argv[1], sys.argv[2]
def files(d):
    return sorted(os.path.relpath(os.path.join(r, f), d) for r, _, fs in os.walk(d) for f in fs)
got = files(weights)
assert "model.safetensors" in got and "state.json" in got and "manifest.json" in got, got
assert all(f in ("model.safetensors", "state.json", "manifest.json") or f.startswith("tokenizer/") for f in got), got
m = json.load(open(os.path.join(weights, "manifest.json")))
assert m["format"] == 1 and m["step"] == 20, m
assert sorted(f["path"] for f in m["files"]) == [f for f in got if f != "manifest.json"], m
for f in m["files"]:
    p = os.path.join(weights, f["path"])
    assert os.path.getsize(p) == f["size"] and hashlib.sha256(open(p, "rb").read()).hexdigest() == f["sha256"], f
size = lambda d: sum(os.path.getsize(os.path.join(d, f)) for f in files(d))
print(f"weights-only pull: {size(weights)} of {size(full)} bytes ({100 * size(weights) / size(full):.0f}%)")
PY
"$BIN/trm-eval" --checkpoint "$WORK/weights" --data "$WORK/ds_second" --threads 1 --no-progress >"$WORK/eval_pulled.json" \
  2>"$WORK/eval_pulled.log" || fail "trm-eval cannot load the weights-only checkpoint"
echo "trm-eval on the pulled weights: $(head -c 200 "$WORK/eval_pulled.json")"
echo "evaluation service e2e: ok"
