#!/usr/bin/env bash
# The deployment files (docker/, deploy/; docs/deploy.md) against the real service:
#  1. check_deploy.py on the source alone (dashboard metrics and labels vs the code, flags vs
#     the usage texts, Prometheus targets vs compose ports, Dockerfile vs setup.sh);
#  2. the secrets of docker/make-secrets.sh, and the coordinator and the two workers started
#     with the exact command lines and environment of docker/compose.yaml, moved to loopback
#     (free ports, the secrets and work directories under a temporary folder): TLS, user tokens
#     and the worker secret as compose runs them; a call without a token must be refused;
#  3. a small job (cfg_tiny, byte tokenizer) until every metric has a sample (per-job gauges,
#     a checkpoint's age, RPC histograms, the workers' per-rank gauges), after a short job whose
#     checkpoint is evaluated (--eval-dataset: trm_checkpoint_eval); both /metrics saved;
#  4. when a `prometheus` binary is installed (Debian: prometheus), deploy/prometheus/prometheus.yml
#     pointed at those ports scrapes them and every dashboard query must return data;
#  5. check_deploy.py with the saved scrapes, the binaries' --help (and that Prometheus).
# Usage: deploy_test.sh BIN_DIR SOURCE_DIR
set -euo pipefail
BIN="$(cd "$1" && pwd)"; SRC="$(cd "$2" && pwd)"
CHECK="$SRC/tests/deploy/check_deploy.py"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do  # workers stop their ranks on SIGTERM (SIGKILL after 5 s)
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$WORK"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -n 30 "$f"; }; done; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "== 1. static checks"
python3 "$CHECK" --root "$SRC" || fail "check_deploy.py (source only) found problems above"

echo "== 2. compose's coordinator and workers on loopback"
bash "$SRC/docker/make-secrets.sh" "$WORK/secrets" >/dev/null || fail "docker/make-secrets.sh failed"
PORT=$(free_port); MPORT=$(free_port); W1PORT=$(free_port); W2PORT=$(free_port)
# SERVICE, what (command | env) -> one line each, with compose's container addresses and paths
# moved here; any container path or address left over fails the test (rather than guessing).
compose() {
  python3 - "$SRC" "$1" "$2" "$WORK" "$PORT" "$MPORT" "$W1PORT" "$W2PORT" <<'PY'
import os, sys
src, service, what, work, port, mport, w1, w2 = sys.argv[1:]
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(src, "tests/deploy"))
import check_deploy
docs = check_deploy.load_yaml_all(os.path.join(src, "docker/compose.yaml"))
if check_deploy.problems:
    sys.exit("\n".join(check_deploy.problems))
svc = docs[0]["services"][service]
subst = [("0.0.0.0:50051", f"127.0.0.1:{port}"), ("0.0.0.0:9464", f"127.0.0.1:{mport}"),
         ("coordinator:50051", f"127.0.0.1:{port}"), ("localhost:50051", f"127.0.0.1:{port}"),
         ("0.0.0.0:9465", f"127.0.0.1:{w1 if service == 'worker1' else w2}"),
         ("/run/secrets/", f"{work}/secrets/"), ("/var/lib/trm-worker", f"{work}/{service}"),
         ("/var/lib/trm", f"{work}/coordinator")]
def move(v, prev=""):
    v = str(v)
    if prev == "--host":  # the name other workers reach this one by: loopback here
        return "127.0.0.1"
    for a, b in subst:
        v = v.replace(a, b)
    for bad in ("0.0.0.0", "/run/", "/var/lib", "coordinator:"):
        if bad in v and work not in v:
            sys.exit(f"deploy_test.sh: cannot move '{v}' of compose service {service} to loopback")
    return v
if what == "command":
    argv = [str(a) for a in svc["command"]]
    print("\n".join(move(a, argv[i - 1] if i else "") for i, a in enumerate(argv)))
else:
    env = svc.get("environment") or {}
    items = env.items() if isinstance(env, dict) else (e.split("=", 1) for e in env)
    print("\n".join(f"{k}={move(v)}" for k, v in items))
PY
}
mapfile -t COORD_CMD < <(compose coordinator command) && [ ${#COORD_CMD[@]} -gt 1 ] || fail "no coordinator command in docker/compose.yaml"
mapfile -t COORD_ENV < <(compose coordinator env)
echo "coordinator: ${COORD_CMD[*]}"
env TRM_CONFIG_DIR="$SRC/configs" "$BIN/${COORD_CMD[0]}" "${COORD_CMD[@]:1}" >"$WORK/coordinator.log" 2>&1 &
PIDS+=("$!")
for w in worker1 worker2; do
  mapfile -t CMD < <(compose "$w" command) && [ ${#CMD[@]} -gt 1 ] || fail "no $w command in docker/compose.yaml"
  mapfile -t ENVS < <(compose "$w" env)
  echo "$w: ${ENVS[*]} ${CMD[*]}"
  env "${ENVS[@]}" "$BIN/${CMD[0]}" "${CMD[@]:1}" >"$WORK/$w.log" 2>&1 &
  PIDS+=("$!")
done
# trmctl as `docker compose exec coordinator trmctl` runs it (admin token, the CA).
trmctl() { env "${COORD_ENV[@]}" "$BIN/trmctl" "$@"; }
registered=0
for _ in $(seq 1 300); do
  [ "$(trmctl workers 2>/dev/null | grep -c -E '^worker[12] ')" = 2 ] && { registered=1; break; }; sleep 0.2
done
[ "$registered" = 1 ] || fail "the two workers did not register over TLS with the worker secret"
trmctl workers
NOAUTH=$(env "${COORD_ENV[@]}" TRM_TOKEN_FILE= "$BIN/trmctl" list 2>&1) && fail "a call without a token was accepted"
echo "$NOAUTH" | grep -qi "credentials\|unauthenticated" || fail "no-token call: unexpected answer: $NOAUTH"

echo "== 3. a job, until every metric has a sample"
"$BIN/trm-data" build --input "$SRC/examples/chat_example.json" --format sharegpt --tokenizer byte --max-length 64 \
  --train-split 0.9 --output-dir "$WORK/ds" >/dev/null
trmctl dataset push "$WORK/ds" --name example-chat >/dev/null
# A short job whose one checkpoint is evaluated (--eval-dataset), for trm_checkpoint_eval: it ends,
# so retention never drops that checkpoint's series while the queries run.
EVJOB=$(trmctl submit --config-name cfg_tiny --dataset example-chat --eval-dataset example-chat --world-size 1 \
        --name deploy-evaluated global_batch_size=8 max_steps=10 checkpoint_interval_steps=10 eval_interval=0 threads=1)
env "${COORD_ENV[@]}" timeout 120 "$BIN/trmctl" watch "$EVJOB" >"$WORK/watch-evaluated.log" 2>&1 \
  || fail "the short job $EVJOB did not succeed: $(tail -n 5 "$WORK/watch-evaluated.log")"
JOB=$(trmctl submit --config-name cfg_tiny --dataset example-chat --world-size 1 --name deploy \
      global_batch_size=8 max_steps=5000 checkpoint_interval_steps=5 eval_interval=0 threads=1 log_interval=10)
echo "submitted $JOB"
scrape() {
  curl -sf "http://127.0.0.1:$MPORT/metrics" >"$WORK/coordinator.prom.tmp" && mv "$WORK/coordinator.prom.tmp" "$WORK/coordinator.prom"
  cat /dev/null >"$WORK/worker.prom.tmp"
  for p in $W1PORT $W2PORT; do curl -sf "http://127.0.0.1:$p/metrics" >>"$WORK/worker.prom.tmp" || return 1; done
  mv "$WORK/worker.prom.tmp" "$WORK/worker.prom"
}
ready=0
for _ in $(seq 1 600); do
  if scrape 2>/dev/null \
     && grep -q "^trm_job_checkpoint_age_seconds{job=\"$JOB\"}" "$WORK/coordinator.prom" \
     && grep -qE "^trm_job_step\{job=\"$JOB\"\} [1-9]" "$WORK/coordinator.prom" \
     && grep -q '^trm_rpc_seconds_bucket{' "$WORK/coordinator.prom" \
     && grep -q '^trm_rpc_errors_total{' "$WORK/coordinator.prom" \
     && grep -q "^trm_rank_phase_seconds{job=\"$JOB\"" "$WORK/coordinator.prom" \
     && grep -q "^trm_job_running{job=\"$JOB\"} 1" "$WORK/coordinator.prom" \
     && grep -q "^trm_checkpoint_eval{.*job=\"$EVJOB\"" "$WORK/coordinator.prom" \
     && grep -q "^trm_worker_step_seconds{job=\"$JOB\"" "$WORK/worker.prom" \
     && grep -q "^trm_worker_rank_rss_bytes{job=\"$JOB\"" "$WORK/worker.prom"; then
    ready=1; break
  fi
  sleep 0.5
done
[ "$ready" = 1 ] || fail "the metrics never showed job $JOB's step, checkpoint age, evaluations and rank gauges"
grep -E "^trm_job_(step|loss|checkpoint_age_seconds)\{" "$WORK/coordinator.prom"
grep -E "^trm_checkpoint_eval\{" "$WORK/coordinator.prom" | head -n 3
grep -E "^trm_worker_(step_seconds|rank_rss_bytes)\{" "$WORK/worker.prom"

PROM_ARGS=()
if command -v prometheus >/dev/null 2>&1; then
  echo "== 4. deploy/prometheus/prometheus.yml scraping them, every dashboard query run on it"
  PPORT=$(free_port)
  python3 - "$SRC/deploy/prometheus/prometheus.yml" "$WORK/prometheus.yml" "$MPORT" "$W1PORT" "$W2PORT" <<'PY'
import os, sys
src, out, mport, w1, w2 = sys.argv[1:]
text = open(src).read()
for a, b in (("coordinator:9464", f"127.0.0.1:{mport}"), ("worker1:9465", f"127.0.0.1:{w1}"),
             ("worker2:9465", f"127.0.0.1:{w2}")):
    if a not in text:
        sys.exit(f"deploy_test.sh: {src} has no target {a} to move to loopback")
    text = text.replace(a, b)
text = text.replace("scrape_interval: 10s", "scrape_interval: 1s").replace("evaluation_interval: 30s", "evaluation_interval: 1s")
rules = os.path.join(os.path.dirname(src), "rules/trm.rules.yml")
if "- rules/trm.rules.yml" not in text:
    sys.exit(f"deploy_test.sh: {src} does not load rules/trm.rules.yml")
text = text.replace("- rules/trm.rules.yml", "- " + rules)
open(out, "w").write(text)
PY
  prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/prom" \
    --web.listen-address="127.0.0.1:$PPORT" >"$WORK/prometheus.log" 2>&1 &
  PIDS+=("$!")
  up=0
  for _ in $(seq 1 100); do
    n=$(curl -sf "http://127.0.0.1:$PPORT/api/v1/query?query=count(up%3D%3D1)" 2>/dev/null \
        | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)' 2>/dev/null || echo 0)
    [ "$n" = 3 ] && { up=1; break; }
    sleep 0.3
  done
  [ "$up" = 1 ] || fail "Prometheus did not scrape the coordinator and both workers"
  sleep 4  # a few scrapes, for rate() and histogram_quantile()
  # The alert and recording rules are loaded and evaluate on the live series without errors.
  curl -sf "http://127.0.0.1:$PPORT/api/v1/rules" | python3 -c '
import json, sys
groups = json.load(sys.stdin)["data"]["groups"]
rules = [r for g in groups for r in g["rules"]]
assert len(rules) >= 15, f"{len(rules)} rules loaded"
bad = [(r["name"], r.get("lastError")) for r in rules if r.get("health") not in ("ok", "unknown")]
assert not bad, bad
print(f"prometheus: {len(rules)} rules loaded and evaluated")' || fail "the alert rules on the live Prometheus"
  PROM_ARGS=(--prometheus-url "http://127.0.0.1:$PPORT")
else
  echo "== 4. skipped: no prometheus binary (apt-get install prometheus to run the dashboard's queries)"
fi

echo "== 5. check_deploy.py against the live metrics and the binaries"
python3 "$CHECK" --root "$SRC" --bin-dir "$BIN" --metrics "$WORK/coordinator.prom" --metrics "$WORK/worker.prom" \
  "${PROM_ARGS[@]}" || fail "check_deploy.py found problems above"
trmctl cancel "$JOB" >/dev/null || true
echo "deploy e2e: ok"
