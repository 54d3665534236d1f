#!/usr/bin/env bash
# The web dashboard over the real binaries, in a real browser: a coordinator with --http-listen
# and a worker run a short job; headless Chromium loads /jobs/<id>, and its DOM must hold the
# job's id, its state and a loss series with one point per logged step; a screenshot (PNG) is
# kept as a test artifact; its download link is the checkpoint trmctl pull gets; a running job's
# page has each rank's phase and step time. With --auth-tokens, the same page without a token is
# the login form, never the data. Usage: dashboard.sh BIN_DIR SOURCE_DIR ARTIFACT_DIR
set -euo pipefail
BIN="$1"; SRC="$2"; ARTIFACTS="$3"
source "$(dirname "$0")/lib.sh"
CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
[ -n "$CHROMIUM" ] || fail "no chromium (scripts/setup.sh installs Debian's)"
mkdir -p "$ARTIFACTS"
# Headless, no GPU, no first-run or crash reporting; --no-sandbox because CI runs as root. The
# virtual time budget lets the page's fetches and timers run before the DOM is read.
BROWSES=0
browse() {  # what(--dump-dom | --screenshot=FILE) URL; a fresh profile each time (no lock left over)
  BROWSES=$((BROWSES + 1))
  timeout -k 10 120 "$CHROMIUM" --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run \
    --disable-breakpad --user-data-dir="$WORK/chromium-$BROWSES" --window-size=1400,1400 --virtual-time-budget=8000 \
    "$1" "$2" 2>>"$WORK/chromium.log"
}
wait_for() {  # seconds, what, command...
  local s="$1" what="$2"; shift 2
  for _ in $(seq 1 $((s * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  fail "$what (after $s s)"
}

PORT=$(free_port); HPORT=$(free_port)
export TRM_COORDINATOR="127.0.0.1:$PORT"
"$BIN/trm-coordinator" --listen "127.0.0.1:$PORT" --http-listen "127.0.0.1:$HPORT" --data-dir "$WORK/coord" \
  --heartbeat-interval-ms 300 --config-dir "$SRC/configs" >"$WORK/coordinator.log" 2>&1 &
PIDS+=("$!")
wait_for 60 "the coordinator did not start" "$BIN/trmctl" workers
grep -q "dashboard at http://127.0.0.1:$HPORT/" "$WORK/coordinator.log" || fail "the coordinator does not log the dashboard's URL"
"$BIN/trm-worker" --coordinator "127.0.0.1:$PORT" --id w1 --cpu-slots 1 --work-dir "$WORK/w1" >"$WORK/w1.log" 2>&1 &
PIDS+=("$!")
"$BIN/trm-data" build --input "$SRC/examples/chat_example.json" --format sharegpt --tokenizer byte --max-length 64 \
  --train-split 0.9 --output-dir "$WORK/ds" >/dev/null
"$BIN/trmctl" dataset push "$WORK/ds" --name chat >/dev/null
JOB=$("$BIN/trmctl" submit --config-name cfg_tiny --dataset chat --name dashboard global_batch_size=8 max_steps=40 \
      checkpoint_interval_steps=20 eval_interval=5 threads=1)
"$BIN/trmctl" watch "$JOB" >/dev/null 2>"$WORK/watch.log" || fail "the job failed"
LOGGED=$(curl -sf "http://127.0.0.1:$HPORT/api/jobs/$JOB/metrics" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["train"]["steps"]))')
[ "$LOGGED" -ge 40 ] || fail "the API has $LOGGED training points for 40 steps"

browse --dump-dom "http://127.0.0.1:$HPORT/jobs/$JOB" >"$WORK/job.html"
python3 - "$WORK/job.html" "$JOB" "$LOGGED" <<'PY' || fail "the job page"
import re, sys
dom, job, logged = open(sys.argv[1]).read(), sys.argv[2], int(sys.argv[3])
assert f'<span id="job-id">{job}</span>' in dom, "no job id"
assert 'data-state="succeeded"' in dom, "no succeeded state"
m = re.search(r'<path class="series"[^>]*data-series="lm_loss"[^>]*data-points="(\d+)"', dom)
assert m, "no loss series in the loss chart"
assert int(m.group(1)) == logged, f"{m.group(1)} loss points drawn for {logged} logged steps"
assert 'data-series="eval_lm_loss"' in dom, "no evaluation-loss series"
assert "step_40" in dom, "no checkpoint table"
print(f"job page: {job}, succeeded, {m.group(1)} loss points")
PY
browse --screenshot="$ARTIFACTS/dashboard_job.png" "http://127.0.0.1:$HPORT/jobs/$JOB" >/dev/null
python3 -c 'import sys; d=open(sys.argv[1],"rb").read(); assert d[:8]==b"\x89PNG\r\n\x1a\n" and len(d)>20000, len(d)' \
  "$ARTIFACTS/dashboard_job.png" || fail "no screenshot"
browse --dump-dom "http://127.0.0.1:$HPORT/" >"$WORK/jobs.html"
grep -q "data-job=\"$JOB\"" "$WORK/jobs.html" || fail "the jobs page does not list $JOB"

# The page's download link: the checkpoint as one tar holding the files trmctl pull writes.
HREF=$(python3 -c 'import re,sys; print(re.search(r"href=\"(/api/jobs/[^\"]*/checkpoints/step_40/download)\"", open(sys.argv[1]).read()).group(1))' \
       "$WORK/job.html") || fail "no download link for step_40"
curl -sf "http://127.0.0.1:$HPORT$HREF" -o "$WORK/ckpt.tar" || fail "the download link $HREF"
mkdir -p "$WORK/untar"
tar -xf "$WORK/ckpt.tar" -C "$WORK/untar" || fail "the download is no tar"
"$BIN/trmctl" pull "$JOB" --select step_40 -o "$WORK/pulled" >/dev/null
diff -r "$WORK/pulled" "$WORK/untar/$JOB-step_40" || fail "the tar's files differ from trmctl pull's"

# A running job's page shows each rank: its phase and its last step's times.
LIVE=$("$BIN/trmctl" submit --config-name cfg_tiny --dataset chat --name live global_batch_size=8 max_steps=100000 \
       checkpoint_interval_steps=100000 threads=1)
ranks_reported() {
  curl -sf "http://127.0.0.1:$HPORT/api/jobs/$LIVE" |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["job"].get("ranks",[]); sys.exit(0 if r and "last_step" in r[0] else 1)'
}
wait_for 120 "the running job's ranks report no step times" ranks_reported
browse --dump-dom "http://127.0.0.1:$HPORT/jobs/$LIVE" >"$WORK/live.html"
python3 - "$WORK/live.html" <<'PY' || fail "the running job's page"
import re, sys
dom = open(sys.argv[1]).read()
row = re.search(r'<tr data-rank="0"[^>]*>(.*?)</tr>', dom)
at = dom.find('id="ranks"')
assert row, "no row for rank 0 in the ranks table: " + (dom[at:at + 1500] if at >= 0 else dom[:3000])
cells = re.findall(r'<td[^>]*>(.*?)</td>', row.group(1))
assert cells[2] in ("data", "compute", "allreduce", "checkpoint", "eval"), f"rank 0's phase: {cells[2]}"
assert cells[6].endswith(" ms"), f"rank 0's step time: {cells[6]}"
assert 'data-state="running"' in dom, "not running"
print(f"live job page: rank 0 {cells[2]}, step time {cells[6]}")
PY
browse --screenshot="$ARTIFACTS/dashboard_live.png" "http://127.0.0.1:$HPORT/jobs/$LIVE" >/dev/null
"$BIN/trmctl" cancel "$LIVE" >/dev/null

# With auth: no token, no data (the login form); a token in the URL's place does not help.
APORT=$(free_port); AHPORT=$(free_port)
printf 'dashboard-reader-token-0123 read reader\n' >"$WORK/tokens"
# The same data directory, with auth: the first coordinator goes first.
kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true
"$BIN/trm-coordinator" --listen "127.0.0.1:$APORT" --http-listen "127.0.0.1:$AHPORT" --data-dir "$WORK/coord" \
  --auth-tokens "$WORK/tokens" --config-dir "$SRC/configs" >"$WORK/coordinator_auth.log" 2>&1 &
PIDS+=("$!")
wait_for 60 "the coordinator with auth did not start" curl -sf "http://127.0.0.1:$AHPORT/static/style.css"
browse --dump-dom "http://127.0.0.1:$AHPORT/jobs/$JOB" >"$WORK/login.html"
grep -q '<form method="post" action="/login">' "$WORK/login.html" || fail "no login form without a token"
! grep -q "$JOB" "$WORK/login.html" || fail "the login page shows the job"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$AHPORT/api/jobs")" = 401 ] || fail "the API answers without a token"
curl -sf -H "Authorization: Bearer dashboard-reader-token-0123" "http://127.0.0.1:$AHPORT/api/jobs/$JOB" | grep -q "\"$JOB\"" \
  || fail "a reader's token does not read the job"
echo "dashboard e2e: ok (screenshot: $ARTIFACTS/dashboard_job.png)"
