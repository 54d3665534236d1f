#!/usr/bin/env bash
# Two hosts, not two launchers on loopback: each node of a 2-node run lives in its own network
# namespace, and the namespaces are joined by a veth link (10.77.0.1 <-> 10.77.0.2), as two
# machines on a LAN are. Nothing of one host is reachable at 127.0.0.1 from the other, so a rank
# that advertises a loopback address to its peers (Gloo's default device when the host name
# resolves to 127.0.0.1, as it does here and on many Debian machines) cannot be reached.
#  1. without GLOO_SOCKET_IFNAME the run trains to the same weights, byte for byte, as one
#     launcher with 2 ranks on loopback;
#  2. with GLOO_SOCKET_IFNAME naming each host's interface, the same;
#  3. with GLOO_SOCKET_IFNAME naming an interface that does not exist, the run fails at once with
#     an error that names the variable;
#  4. no shared storage: node 1 has its own run_dir, so only node 0's holds checkpoints. Rank 1 is
#     SIGKILLed mid-run (--max-restarts 1): on the restart it receives rank 0's checkpoint over the
#     network, and the run still ends with the loopback run's weights;
#  5. the same link over IPv6 (fd77::1 <-> fd77::2, endpoint [fd77::1]:PORT): the same weights;
#  6. the service across the two hosts: the coordinator and worker w1 on host A, worker w2 on
#     host B, neither given --host; a 2-rank job needs both workers and succeeds.
# Needs CAP_NET_ADMIN (ip netns, veth); exits 77 (skipped) where it is not allowed.
# Usage: multihost.sh BIN_DIR SOURCE_DIR SHARED_DIR
set -euo pipefail
BIN="$(cd "$1" && pwd)"; SRC="$(cd "$2" && pwd)"; SHARED="$3"
NS_A="trm$$a"; NS_B="trm$$b"; IF_A="tv$$a"; IF_B="tv$$b"
ADDR_A=10.77.0.1; ADDR_B=10.77.0.2; ADDR6_A=fd77::1; ADDR6_B=fd77::2
WORK="$(mktemp -d)"
cleanup() {
  pkill -9 -f "$WORK/" 2>/dev/null || true
  ip netns del "$NS_A" 2>/dev/null || true
  ip netns del "$NS_B" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$WORK"/*.log; do echo "--- $f"; tail -n 40 "$f"; done; exit 1; }

if ! command -v ip >/dev/null || ! ip netns add "$NS_A" 2>/dev/null; then
  echo "SKIP: network namespaces (ip netns add) are not allowed here"; exit 77
fi
ip netns add "$NS_B"
ip link add "$IF_A" type veth peer name "$IF_B"
ip link set "$IF_A" netns "$NS_A"
ip link set "$IF_B" netns "$NS_B"
ip -n "$NS_A" addr add "$ADDR_A/24" dev "$IF_A"
ip -n "$NS_B" addr add "$ADDR_B/24" dev "$IF_B"
# nodad: usable at once, without duplicate-address detection's delay.
ip -n "$NS_A" addr add "$ADDR6_A/64" dev "$IF_A" nodad
ip -n "$NS_B" addr add "$ADDR6_B/64" dev "$IF_B" nodad
for ns in "$NS_A" "$NS_B"; do
  ip -n "$ns" link set lo up
done
ip -n "$NS_A" link set "$IF_A" up
ip -n "$NS_B" link set "$IF_B" up

"$BIN/trm-data" build --input "$SHARED/data/alpaca_gpteacher_roleplay.json" --tokenizer byte --max-length 48 \
  --subsample-size 64 --output-dir "$WORK/ds" >/dev/null
TRAIN=(trm-train --config-name cfg_tiny --config-dir "$SRC/configs" --no-progress "data_paths=[$WORK/ds]"
       global_batch_size=8 max_steps=40 checkpoint_interval_steps=5 keep_checkpoints=0 threads=1 log_interval=10
       eval_interval=0)
# A rank that cannot reach its peer must fail the test in seconds, not after the default 300 s.
export TRM_COLLECTIVE_TIMEOUT_S=20

echo "== reference: one launcher, 2 ranks on loopback"
timeout 300 "$BIN/trm-launch" --standalone --nproc-per-node 2 "${TRAIN[@]}" "run_dir=$WORK/ref" > "$WORK/ref.log" 2>&1 \
  || fail "the loopback run failed"

start_node() {  # node, run name, run_dir, extra environment (NAME=VALUE or ""), extra launcher flags...
  local node=$1 run=$2 dir=$3 env=$4 ns="$NS_A"; shift 4
  [ "$node" = 1 ] && ns="$NS_B"
  ip netns exec "$ns" env $env timeout 120 "$BIN/trm-launch" --nnodes 2 --nproc-per-node 1 --node-rank "$node" \
    --rdzv-endpoint "${RDZV:-$ADDR_A:29400}" --rdzv-id "$run" --rdzv-timeout-s 30 "$@" "${TRAIN[@]}" "run_dir=$dir" \
    > "$WORK/$run-node$node.log" 2>&1 &
}
two_hosts() {  # run name, then extra environment for node 0 and for node 1 (NAME=VALUE or "")
  local run=$1 rc_a=0 rc_b=0 pid_a pid_b
  start_node 0 "$run" "$WORK/$run" "$2"; pid_a=$!
  start_node 1 "$run" "$WORK/$run" "$3"; pid_b=$!
  wait "$pid_a" || rc_a=$?
  wait "$pid_b" || rc_b=$?
  echo "$rc_a $rc_b"
}
wait_for() {  # path, seconds
  for _ in $(seq 1 $(($2 * 10))); do [ -e "$1" ] && return 0; sleep 0.1; done
  fail "timed out waiting for $1"
}

trains_like_ref() {  # description, run name, environment for node 0, for node 1 ("" for none)
  local a b
  read -r a b < <(two_hosts "$2" "$3" "$4")
  [ "$a" = 0 ] && [ "$b" = 0 ] || fail "$1: launchers exited $a and $b"
  cmp "$WORK/ref/step_40/model.safetensors" "$WORK/$2/step_40/model.safetensors" \
    || fail "$1: ended with other weights than the loopback run"
  echo "$1: trained to the loopback run's weights"
}

echo "== two hosts, no GLOO_SOCKET_IFNAME"
trains_like_ref "two hosts" auto "" ""

echo "== two hosts, GLOO_SOCKET_IFNAME per host"
trains_like_ref "two hosts with GLOO_SOCKET_IFNAME" ifname "GLOO_SOCKET_IFNAME=$IF_A" "GLOO_SOCKET_IFNAME=$IF_B"

echo "== two hosts, GLOO_SOCKET_IFNAME naming no interface"
start=$(date +%s)
read -r a b < <(two_hosts badif "GLOO_SOCKET_IFNAME=nosuch0" "GLOO_SOCKET_IFNAME=nosuch0")
elapsed=$(( $(date +%s) - start ))
[ "$a" != 0 ] && [ "$b" != 0 ] || fail "a missing interface did not fail the run (exits $a and $b)"
grep -q "GLOO_SOCKET_IFNAME" "$WORK/badif-node0.log" || fail "the failure does not name GLOO_SOCKET_IFNAME"
[ "$elapsed" -le 60 ] || fail "a missing interface took ${elapsed}s to fail the run"
echo "a missing interface failed the run in ${elapsed}s naming GLOO_SOCKET_IFNAME"

echo "== two hosts without shared storage, rank 1 SIGKILLed, --max-restarts 1"
start_node 0 unshared "$WORK/unshared" "" --max-restarts 1; pid_a=$!
start_node 1 unshared "$WORK/unshared-node1" "" --max-restarts 1; pid_b=$!
wait_for "$WORK/unshared/step_10/manifest.json" 120
killed=""
for p in $(pgrep -f "run_dir=$WORK/unshared-node1" || true); do  # the rank, not its launcher
  if tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -qx 'RANK=1'; then kill -9 "$p"; killed=$p; fi
done
[ -n "$killed" ] || fail "rank 1 was not running"
rc_a=0; rc_b=0
wait "$pid_a" || rc_a=$?
wait "$pid_b" || rc_b=$?
[ "$rc_a" = 0 ] && [ "$rc_b" = 0 ] || fail "without shared storage: launchers exited $rc_a and $rc_b"
grep -q "sending checkpoint step_.* to 1 rank" "$WORK/unshared-node0.log" || fail "rank 0 did not send its checkpoint"
[ ! -e "$WORK/unshared-node1/step_10" ] || fail "rank 1 wrote checkpoints of its own"
cmp "$WORK/ref/step_40/model.safetensors" "$WORK/unshared/step_40/model.safetensors" \
  || fail "the restarted run without shared storage ended with other weights than the loopback run"
grep -h "sending checkpoint" "$WORK/unshared-node0.log" | head -1
echo "restarted from a checkpoint received over the network, to the loopback run's weights"

echo "== two hosts over IPv6"
RDZV="[$ADDR6_A]:29401" trains_like_ref "two hosts over IPv6" ipv6 "" ""

echo "== the service across two hosts (coordinator + w1 on A, w2 on B, no --host)"
in_a() { ip netns exec "$NS_A" env TRM_COORDINATOR="$ADDR_A:50051" "$@"; }
# Plaintext off loopback needs --insecure (a test network of our own).
in_a "$BIN/trm-coordinator" --listen "$ADDR_A:50051" --insecure --data-dir "$WORK/coord" --heartbeat-interval-ms 300 \
  --config-dir "$SRC/configs" > "$WORK/coordinator.log" 2>&1 &
up=""
for _ in $(seq 1 100); do in_a "$BIN/trmctl" workers >/dev/null 2>&1 && up=1 && break; sleep 0.1; done
[ -n "$up" ] || fail "the coordinator did not come up on $ADDR_A"
ip netns exec "$NS_A" "$BIN/trm-worker" --coordinator "$ADDR_A:50051" --id w1 --cpu-slots 1 --work-dir "$WORK/w1" \
  > "$WORK/w1.log" 2>&1 &
ip netns exec "$NS_B" "$BIN/trm-worker" --coordinator "$ADDR_A:50051" --id w2 --cpu-slots 1 --work-dir "$WORK/w2" \
  > "$WORK/w2.log" 2>&1 &
for _ in $(seq 1 100); do
  [ "$(in_a "$BIN/trmctl" workers 2>/dev/null | grep -c -E '^w[12] ')" = 2 ] && break; sleep 0.1
done
in_a "$BIN/trmctl" dataset push "$WORK/ds" --name multihost >/dev/null || fail "dataset push failed"
JOB=$(in_a "$BIN/trmctl" submit --config-name cfg_tiny --config-dir "$SRC/configs" --dataset multihost --world-size 2 \
      global_batch_size=8 max_steps=20 checkpoint_interval_steps=10 eval_interval=0 threads=1) || fail "submit failed"
rc=0; in_a timeout 240 "$BIN/trmctl" watch "$JOB" > "$WORK/watch.log" 2>&1 || rc=$?
[ "$rc" = 0 ] || fail "the job across two hosts did not succeed (trmctl watch exited $rc)"
for w in w1 w2; do
  ls "$WORK/$w"/jobs/*/attempt_*/rank_*.log >/dev/null 2>&1 || fail "worker $w ran no rank of the job"
done
echo "a 2-rank job on a worker of each host succeeded"
