#!/usr/bin/env bash
# The main job, end to end on embedded defaults (what `make run` does after building):
#  1. build a chat dataset from the shipped example conversations (byte tokenizer, no downloads),
#  2. train the tiny recursive model on it for a few minutes (configs/cfg_tiny.yaml),
#  3. chat with the result: a few trained prompts, then an interactive session on a terminal.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=build/bin
DATA=build/data/example-chat
RUN=build/runs/tiny-chat

echo "== 1/3 dataset: examples/chat_example.json -> $DATA"
"$BIN/trm-data" build --input examples/chat_example.json --format sharegpt --tokenizer byte \
  --max-length 128 --train-split 1.0 --output-dir "$DATA"

echo "== 2/3 training the tiny preset (a few minutes on 2 cores) -> $RUN"
rm -rf "$RUN"
"$BIN/trm-train" --config-name cfg_tiny "data_paths=[$DATA]" "run_dir=$RUN" "$@"

echo "== 3/3 chatting with $(ls -d "$RUN"/step_* | sort -V | tail -1)"
for prompt in "Hello!" "What is the capital of France?" "How many legs does a spider have?" "What do bees make?"; do
  printf 'you> %s\ntrm> ' "$prompt"
  "$BIN/trm-generate" --checkpoint "$RUN" --prompt "$prompt" --temperature 0 2>/dev/null
done
if [ -t 0 ] && [ -t 1 ]; then
  echo "(interactive: type a message, /quit to end)"
  "$BIN/trm-generate" --checkpoint "$RUN" --interactive --temperature 0
else
  echo "chat interactively with: $BIN/trm-generate --checkpoint $RUN --interactive"
fi
