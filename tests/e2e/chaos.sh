#!/usr/bin/env bash
# Chaos: a 2-worker, 2-rank job survives KILLS random events: SIGKILLs of workers, rank
# processes and the coordinator (each killed daemon is started again, as systemd would) and
# preemptions by a short higher-priority job (its ranks save, often while a periodic checkpoint
# is uploading, and resume later; the kills land during preemptions too), and ends with final
# weights equal, byte for byte, to an undisturbed run of the same job. Reports the steps redone.
# Usage: chaos.sh BIN_DIR SOURCE_DIR [KILLS] [SEED]
set -euo pipefail
BIN="$1"; SRC="$2"; KILLS="${3:-10}"; SEED="${4:-$RANDOM}"
RANDOM=$SEED
WORK="$(mktemp -d)"
declare -A PID
cleanup() {
  for p in "${PID[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  pkill -9 -f "$WORK/" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL (seed $SEED): $*"; for f in "$WORK"/*.log; do echo "--- $f"; tail -n 25 "$f"; done; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
export TRM_COORDINATOR="127.0.0.1:$PORT"

start() {  # name
  case "$1" in
    coord) "$BIN/trm-coordinator" --listen "127.0.0.1:$PORT" --data-dir "$WORK/coord" --heartbeat-interval-ms 300 \
             --heartbeat-timeout-s 4 --config-dir "$SRC/configs" >>"$WORK/coord.log" 2>&1 & ;;
    w1|w2) "$BIN/trm-worker" --coordinator "127.0.0.1:$PORT" --id "$1" --cpu-slots 1 --work-dir "$WORK/$1" \
             >>"$WORK/$1.log" 2>&1 & ;;
  esac
  PID[$1]=$!
}
start coord
for _ in $(seq 1 100); do "$BIN/trmctl" workers >/dev/null 2>&1 && break; sleep 0.1; done
start w1; start w2
for _ in $(seq 1 100); do [ "$("$BIN/trmctl" workers 2>/dev/null | grep -c ' yes ')" = 2 ] && break; sleep 0.1; done

"$BIN/trm-data" build --input "$SRC/examples/chat_example.json" --format sharegpt --tokenizer byte --max-length 64 \
  --train-split 1.0 --output-dir "$WORK/ds" >/dev/null
"$BIN/trmctl" dataset push "$WORK/ds" --name chaos >/dev/null
MAX_STEPS=240
SUBMIT=(submit --config-name cfg_tiny --config-dir "$SRC/configs" --dataset chaos --world-size 2 --max-restarts 30
        global_batch_size=8 max_steps=$MAX_STEPS checkpoint_interval_steps=5 keep_checkpoints=0 eval_interval=0 threads=1
        log_interval=20 arch.halt_exploration_prob=0.1)

state_of() { "$BIN/trmctl" status "$1" --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])' 2>/dev/null || echo unknown; }
wait_done() {  # job, seconds
  for _ in $(seq 1 $(($2 * 2))); do
    case "$(state_of "$1")" in JOB_SUCCEEDED) return 0;; JOB_FAILED|JOB_CANCELLED) fail "$1 ended $(state_of "$1")";; esac
    sleep 0.5
  done
  fail "$1 did not finish in $2 s"
}

REF=$("$BIN/trmctl" "${SUBMIT[@]}" --name reference)
wait_done "$REF" 300
"$BIN/trmctl" pull "$REF" -o "$WORK/ref" >/dev/null

JOB=$("$BIN/trmctl" "${SUBMIT[@]}" --name chaos)
"$BIN/trmctl" watch "$JOB" --events --reconnect-s 600 >"$WORK/events.jsonl" 2>"$WORK/watch.log" &
PID[watch]=$!
kills=0
summary=""
HIGH=()
# The highest step the chaos job has reported so far (its watch's events).
max_step() {
  python3 - "$WORK/events.jsonl" <<'PY' 2>/dev/null || echo 0
import json, sys
m = 0
for line in open(sys.argv[1]):
    try:
        e = json.loads(line)
    except ValueError:
        continue  # a line being written
    if "metrics" in e:
        m = max(m, int(e["metrics"]["step"]))
print(m)
PY
}
while [ "$kills" -lt "$KILLS" ]; do
  # Events are paced by the job's progress, not by the clock (how fast it trains depends on the
  # machine): event k waits for step (k + 1) * MAX_STEPS / (2 * KILLS + 2), spreading the events
  # over the job's first half, so the second half (120 steps) is left for what an event itself
  # takes (a restart, a preemption) while the job trains on; then a random 0.1-1 s more. The
  # event right after the halfway preemption does not wait: it lands while the job is preempted.
  if [ "$kills" -ne $((KILLS / 2 + 1)) ]; then
    target=$(((kills + 1) * MAX_STEPS / (2 * KILLS + 2)))
    for _ in $(seq 1 1200); do [ "$(max_step)" -ge "$target" ] && break; sleep 0.25; done
    [ "$(max_step)" -ge "$target" ] || fail "the job reported no step $target within 300 s"
  fi
  sleep "$(python3 -c "import random; random.seed($SEED * 100 + $kills); print(round(random.uniform(0.1, 1.0), 2))")"
  [ "$(state_of "$JOB")" = JOB_SUCCEEDED ] && fail "the job finished after only $kills kills; make it longer"
  case $((RANDOM % 5)) in
    0) victim=coord ;;
    1) victim=w1 ;;
    2) victim=w2 ;;
    3) victim=rank ;;
    4) victim=preempt ;;
  esac
  # At least one preemption in every run, halfway through.
  if [ "$kills" -eq $((KILLS / 2)) ] && [ ${#HIGH[@]} -eq 0 ]; then victim=preempt; fi
  if [ "$victim" = preempt ]; then
    # Needs both slots: the chaos job is preempted (unless it is between attempts already).
    if h=$("$BIN/trmctl" submit --config-name cfg_tiny --config-dir "$SRC/configs" --dataset chaos --world-size 2 \
             --priority 5 --max-restarts 30 --name "high-$kills" global_batch_size=8 max_steps=6 eval_interval=0 \
             threads=1 2>>"$WORK/submit.log"); then
      HIGH+=("$h")
    else
      continue  # the coordinator is starting again: another event later
    fi
  elif [ "$victim" = rank ]; then
    ranks=($(pgrep -f "$WORK/w[12]/jobs/$JOB/" || true))
    [ ${#ranks[@]} -eq 0 ] && continue  # between attempts: try another victim later
    r=${ranks[$((RANDOM % ${#ranks[@]}))]}
    kill -9 "$r" 2>/dev/null || continue
  else
    kill -9 "${PID[$victim]}" 2>/dev/null || true
    wait "${PID[$victim]}" 2>/dev/null || true
    sleep 0.3
    start "$victim"
  fi
  kills=$((kills + 1))
  summary="$summary $victim"
  echo "kill $kills: $victim"
done
wait_done "$JOB" 400
for h in "${HIGH[@]}"; do wait_done "$h" 120; done
"$BIN/trmctl" status "$JOB"
"$BIN/trmctl" pull "$JOB" -o "$WORK/chaos" >/dev/null
cmp "$WORK/ref/model.safetensors" "$WORK/chaos/model.safetensors" || fail "final weights differ from the undisturbed run"
kill "${PID[watch]}" 2>/dev/null || true
python3 - "$WORK/events.jsonl" "$KILLS" "$summary" <<'PY'
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
steps = [int(e["metrics"]["step"]) for e in ev if "metrics" in e]
restarts = sum(1 for e in ev if "state" in e and "restarting" in e["state"].get("message", ""))
preempted = sum(1 for e in ev if "state" in e and " preempted by " in e["state"].get("message", ""))
print(f"chaos: {sys.argv[2]} events ({sys.argv[3].strip()}), {restarts} restarts, {preempted} preemptions; "
      f"{len(steps)} steps reported for {max(steps)} distinct, {len(steps) - len(set(steps))} redone; "
      "final weights identical to the undisturbed run")
PY
