#!/usr/bin/env bash
# trm-eval, the binary: one JSON line on stdout equal to the trainer's evaluation at the
# checkpoint's step; bad input (a dataset the model was not trained on, a missing split, a
# damaged checkpoint, a bad flag) exits 2 with a message naming it and nothing on stdout.
# Usage: eval_cli.sh BIN_DIR SOURCE_DIR SHARED_DIR
set -euo pipefail
BIN="$1"; SRC="$2"; SHARED="$3"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

"$BIN/trm-data" build --input "$SHARED/data/sharegpt_fastchat_dummy.json" --tokenizer byte --max-length 32 \
  --subsample-size 100 --output-dir "$WORK/ds" >/dev/null
"$BIN/trm-data" build --input "$SHARED/data/alpaca_gpteacher_roleplay.json" --tokenizer byte --max-length 32 \
  --subsample-size 100 --output-dir "$WORK/other" >/dev/null
"$BIN/trm-data" build --input "$SHARED/data/alpaca_gpteacher_roleplay.json" --tokenizer byte --max-length 24 \
  --subsample-size 40 --output-dir "$WORK/short" >/dev/null
"$BIN/trm-train" --config-name cfg_tiny --config-dir "$SRC/configs" --no-progress "data_paths=[$WORK/ds]" \
  "run_dir=$WORK/run" global_batch_size=8 epochs=2 eval_interval=2 threads=1 arch.hidden_size=32 arch.num_heads=2 \
  arch.L_layers=1 arch.halt_max_steps=2 > "$WORK/train.log" 2>&1 || { cat "$WORK/train.log"; exit 1; }

"$BIN/trm-eval" --checkpoint "$WORK/run" --data "$WORK/ds" --threads 1 > "$WORK/eval.json" 2> "$WORK/eval.err"
test "$(wc -l < "$WORK/eval.json")" -eq 1 || { echo "expected one stdout line:"; cat "$WORK/eval.json"; exit 1; }
grep -q "rows" "$WORK/eval.err" || { echo "no progress on stderr"; exit 1; }
/usr/bin/python3 - "$WORK/eval.json" "$WORK/run/metrics.jsonl" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
evals = [json.loads(l) for l in open(sys.argv[2]) if '"eval":true' in l.replace(" ", "")]
last = evals[-1]
assert r["checkpoint"].endswith("step_%d" % last["step"]), (r["checkpoint"], last["step"])
assert r["split"] == "test" and r["rows"] == int(last["eval_rows"]), r
for name, ours in [("lm_loss", "lm_loss"), ("accuracy", "accuracy"), ("exact_accuracy", "exact_accuracy"),
                   ("q_halt_accuracy", "q_halt_accuracy"), ("q_halt_loss", "q_halt_loss"),
                   ("act_steps", "steps"), ("count", "count")]:
    want, got = last["eval_" + name], r["metrics"][ours]
    assert abs(got - want) <= 1e-4 * max(abs(want), 1e-6), (name, got, want)
for k in ("token_loss", "perplexity"):
    assert r["metrics"][k] > 0, r
print("trm-eval == the trainer's evaluation at step", last["step"])
PY
# Under trm-worker (TRM_PHASE_FILE) the pass reports phase eval (5) with the rows done after every
# batch, so the hang budget bounds a batch, not the whole evaluation.
TRM_PHASE_FILE="$WORK/phase" "$BIN/trm-eval" --checkpoint "$WORK/run" --data "$WORK/ds" --batch-size 2 \
  --no-progress --threads 1 > /dev/null
grep -qE '^trm-phase2 5 5 ' "$WORK/phase" || { echo "phase file: $(cat "$WORK/phase")"; exit 1; }
# Another dataset of the same tokenizer and row length evaluates.
"$BIN/trm-eval" --checkpoint "$WORK/run" --data "$WORK/other" --no-progress --threads 1 | grep -q '"rows":5'

expect_bad() {  # what, pattern the message must hold, then the trm-eval arguments
  local what="$1" pattern="$2"; shift 2
  set +e
  "$BIN/trm-eval" "$@" --no-progress > "$WORK/bad.out" 2> "$WORK/bad.err"
  local rc=$?
  set -e
  [ "$rc" -eq 2 ] || { echo "$what: exit $rc, expected 2"; cat "$WORK/bad.err"; exit 1; }
  [ ! -s "$WORK/bad.out" ] || { echo "$what: wrote to stdout"; exit 1; }
  grep -q -- "$pattern" "$WORK/bad.err" || { echo "$what: message lacks '$pattern':"; cat "$WORK/bad.err"; exit 1; }
  echo "$what: exit 2, $(head -c 160 "$WORK/bad.err")"
}
expect_bad "other row length" "seq_len 24 does not match the checkpoint's 32" --checkpoint "$WORK/run" --data "$WORK/short"
expect_bad "missing split" "no 'dev' split" --checkpoint "$WORK/run" --data "$WORK/ds" --split dev
expect_bad "no checkpoint" "neither a checkpoint" --checkpoint "$WORK/ds" --data "$WORK/ds"
expect_bad "bad flag" "unknown option --batch" --checkpoint "$WORK/run" --data "$WORK/ds" --batch 3
ck="$(ls -d "$WORK"/run/step_* | tail -1)"
printf 'X' | dd of="$ck/model.safetensors" bs=1 seek=200 conv=notrunc status=none
expect_bad "damaged checkpoint" "model.safetensors" --checkpoint "$ck" --data "$WORK/ds"
# Generation-based: one JSON line, one completion line per prompt; an empty prompts file exits 2.
printf '%s\n' '{"prompt": "Hello", "reference": "Hi"}' '{"prompt": "What is 2+2?", "reference": "4"}' > "$WORK/prompts.jsonl"
"$BIN/trm-eval" generate --checkpoint "$WORK/run" --prompts "$WORK/prompts.jsonl" --max-new-tokens 4 --threads 1 \
  --no-progress --output "$WORK/completions.jsonl" > "$WORK/gen.json"
test "$(wc -l < "$WORK/gen.json")" -eq 1 && grep -q '"exact_match"' "$WORK/gen.json" && grep -q '"rows":2' "$WORK/gen.json" ||
  { echo "generate: unexpected output:"; cat "$WORK/gen.json"; exit 1; }
test "$(wc -l < "$WORK/completions.jsonl")" -eq 2 || { echo "generate: expected 2 completions"; exit 1; }
TRM_PHASE_FILE="$WORK/phase" "$BIN/trm-eval" generate --checkpoint "$WORK/run" --prompts "$WORK/prompts.jsonl" \
  --max-new-tokens 2 --batch-size 1 --threads 1 --no-progress > /dev/null
grep -qE '^trm-phase2 5 2 ' "$WORK/phase" || { echo "generate phase file: $(cat "$WORK/phase")"; exit 1; }
: > "$WORK/empty.jsonl"
expect_bad "empty prompts file" "empty.jsonl" generate --checkpoint "$WORK/run" --prompts "$WORK/empty.jsonl"
echo "eval_cli: ok"
