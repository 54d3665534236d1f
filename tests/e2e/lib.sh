# Shared by the end-to-end scripts that source it: a work directory removed on exit with every
# process started under it, `fail` (prints the logs in it), `free_port`.
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
