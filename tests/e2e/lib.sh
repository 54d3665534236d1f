# Shared by the end-to-end scripts that source it: a work directory removed on exit with every
# process started under it, `fail` (prints the logs in it), `free_port`, and (with BIN set)
# `same_weights_as_undisturbed`.
WORK="$(mktemp -d)"
PIDS=()
e2e_cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  pkill -9 -f "$WORK/" 2>/dev/null || true
  rm -rf "$WORK"
}
trap e2e_cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$WORK"/*.log; do echo "--- $f"; tail -n 30 "$f"; done; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Runs the job `trmctl submit SUBMIT_ARGS...` makes again, undisturbed, and fails unless JOB's
# final model.safetensors is byte-identical to its; WHAT names JOB's run in the failure.
same_weights_as_undisturbed() {  # JOB WHAT SUBMIT_ARGS...
  local job="$1" what="$2" same
  shift 2
  same=$("$BIN/trmctl" submit "$@" --name undisturbed)
  "$BIN/trmctl" watch "$same" >/dev/null 2>"$WORK/watch_same.log" || fail "the undisturbed run failed"
  "$BIN/trmctl" pull "$job" --select latest -o "$WORK/${job}_final" >/dev/null
  "$BIN/trmctl" pull "$same" --select latest -o "$WORK/same_final" >/dev/null
  cmp "$WORK/${job}_final/model.safetensors" "$WORK/same_final/model.safetensors" \
    || fail "the $what run's final weights differ from the undisturbed run's"
}
