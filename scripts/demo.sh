#!/usr/bin/env bash
# The main job, end to end on embedded defaults (what `make run` does after building), through
# the service as a user drives it:
#  1. build a chat dataset from the shipped example conversations (byte tokenizer, no downloads);
#  2. start the service in one process: `trm-coordinator --standalone` (SQLite state and a local
#     CPU worker under build/service);
#  3. push the dataset, submit the tiny chat job (configs/cfg_tiny.yaml), watch it train;
#  4. pull the final checkpoint (SHA-256 verified) and chat with it.
# Extra arguments are config overrides for the job (e.g. max_steps=200).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=build/bin
DATA=build/data/example-chat
SERVICE=build/service
OUT=build/runs/tiny-chat

echo "== 1/4 dataset: examples/chat_example.json -> $DATA"
"$BIN/trm-data" build --input examples/chat_example.json --format sharegpt --tokenizer byte \
  --max-length 128 --train-split 1.0 --output-dir "$DATA"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
HTTP_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export TRM_COORDINATOR="127.0.0.1:$PORT"
echo "== 2/4 service: trm-coordinator --standalone on $TRM_COORDINATOR (log: $SERVICE/service.log)"
mkdir -p "$SERVICE"
"$BIN/trm-coordinator" --standalone --cpu-slots 1 --listen "$TRM_COORDINATOR" --data-dir "$SERVICE" \
  --config-dir configs --http-listen "127.0.0.1:$HTTP_PORT" >"$SERVICE/service.log" 2>&1 &
SERVICE_PID=$!
trap 'kill $SERVICE_PID 2>/dev/null; wait $SERVICE_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  "$BIN/trmctl" workers 2>/dev/null | grep -q '^local ' && break
  sleep 0.1
done
"$BIN/trmctl" workers

echo "== 3/4 push, submit, watch (a few minutes on 2 cores)"
"$BIN/trmctl" dataset push "$DATA" --name example-chat
JOB=$("$BIN/trmctl" submit --config-name cfg_tiny --dataset example-chat --name tiny-chat log_interval=100 "$@")
echo "job $JOB submitted; watch it in a browser: http://127.0.0.1:$HTTP_PORT/jobs/$JOB"
"$BIN/trmctl" watch "$JOB"
"$BIN/trmctl" checkpoints "$JOB"

echo "== 4/4 pull and chat"
rm -rf "$OUT"
"$BIN/trmctl" pull "$JOB" --select latest -o "$OUT"
for prompt in "Hello!" "What is the capital of France?" "How many legs does a spider have?" "What do bees make?"; do
  printf 'you> %s\ntrm> ' "$prompt"
  "$BIN/trm-generate" --checkpoint "$OUT" --prompt "$prompt" --temperature 0 2>/dev/null
done
if [ -t 0 ] && [ -t 1 ]; then
  echo "(interactive: type a message, /quit to end)"
  "$BIN/trm-generate" --checkpoint "$OUT" --interactive --temperature 0
else
  echo "chat interactively with: $BIN/trm-generate --checkpoint $OUT --interactive"
fi
