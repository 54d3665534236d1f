#!/usr/bin/env bash
# docs/config-reference.md and docs/api.md are what scripts/gen_docs.sh makes of the code now:
# a key, flag or RPC added, changed or removed without regenerating them fails here.
# Usage: docs_reference.sh BIN_DIR SOURCE_DIR
set -euo pipefail
BIN="$1"; SRC="$2"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
bash "$SRC/scripts/gen_docs.sh" "$BIN" "$OUT"
status=0
for f in config-reference.md api.md; do
  if ! diff -u "$SRC/docs/$f" "$OUT/$f" >"$OUT/$f.diff"; then
    echo "FAIL: docs/$f is stale; run scripts/gen_docs.sh and commit the result. The difference:"
    head -n 60 "$OUT/$f.diff"
    status=1
  fi
done
# The tables really are the code's: every key the shipped configs use is in the reference.
for key in $(grep -hoE '^[a-z_A-Z]+:' "$SRC"/configs/cfg_*.yaml "$SRC"/configs/arch/*.yaml | tr -d : | sort -u); do
  [ "$key" = defaults ] && continue
  grep -q "^| \`$key\` |" "$SRC/docs/config-reference.md" || { echo "FAIL: config key $key is not in docs/config-reference.md"; status=1; }
done
[ $status -eq 0 ] && echo "docs reference: up to date"
exit $status
