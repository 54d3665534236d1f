#!/usr/bin/env bash
# deploy/slurm/ against a real Slurm on loopback: munged (a key generated here), slurmctld and
# slurmd (one node, this machine's short name at 127.0.0.1, 2 CPUs, one partition; every state,
# spool, log and pid file under a temporary folder, free ports), then
#  1. `sbatch --wait deploy/slurm/train.sbatch`: a 2-rank run (1 node, TRM_NPROC_PER_NODE=2,
#     cfg_tiny, a few steps) through srun and trm-launch's rendezvous on the node's address;
#  2. the same training under `trm-launch --standalone --nproc-per-node 2`: the final weights
#     and optimizer state must be the same, byte for byte;
#  3. `sbatch deploy/slurm/workers.sbatch` against a coordinator on loopback: the node's worker
#     registers (id slurm-<node>); scancel stops it.
# Skips (77) when the daemons cannot run here: not root, Slurm or munge not installed (Debian:
# slurmctld slurmd slurm-client munge), or the binaries not built.
# Usage: slurm.sh BIN_DIR SOURCE_DIR [SHARED_DIR (default SOURCE_DIR/../shared)]
set -euo pipefail
skip() { echo "SKIP: $*" >&2; exit 77; }
[ $# -ge 2 ] || { echo "usage: slurm.sh BIN_DIR SOURCE_DIR [SHARED_DIR]" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || skip "not root: slurmd must run as root to start jobs (SlurmdUser)"
for tool in munged mungekey slurmctld slurmd sbatch srun scontrol sinfo squeue; do
  command -v "$tool" >/dev/null || skip "'$tool' not installed (Debian: slurmctld slurmd slurm-client munge)"
done
[ -d "$1" ] || skip "no binaries at $1: build first"
BIN="$(cd "$1" && pwd)"; SRC="$(cd "$2" && pwd)"
SHARED="${3:-$SRC/../shared}"
for b in trm-launch trm-train trm-data trm-worker trm-coordinator trmctl; do [ -x "$BIN/$b" ] || skip "$BIN/$b not built"; done
DATA="$SHARED/data/alpaca_gpteacher_roleplay.json"
[ -f "$DATA" ] || skip "no dataset at $DATA"

# Nothing of a Slurm this test may run inside (a job's SLURM_JOB_ID, a site's SLURM_CONF).
for v in $(compgen -e | grep '^SLURM_' || true); do unset "$v"; done

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  # Jobs first (slurmd kills their steps), then the daemons: slurmd, slurmctld, munged.
  if [ "${SLURM_CONF:-}" = "$WORK/slurm.conf" ]; then  # this test's cluster, never one around it
    scancel --quiet --full --user root 2>/dev/null || true
    wait_until 20 '[ -z "$(squeue -h -o %i 2>/dev/null || true)" ]' || true  # no slurmctld: none
  fi
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill -TERM "${PIDS[$i]}" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  pkill -9 -f "$WORK/" 2>/dev/null || true  # anything left that was started with a path in here
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*"
  for f in "$WORK"/*.out "$WORK"/*.log "$WORK"/log/*.log; do
    [ -f "$f" ] || continue
    [[ "$f" == *.out.log && -s "${f%.out.log}.log" ]] && continue  # a daemon's stderr, its log file has it
    echo "--- $f"; tail -n 40 "$f"
  done
  exit 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Polls COMMAND (a string for eval) every 0.2 s for at most SECONDS; 1 when it never succeeded.
wait_until() {
  local secs=$1; shift
  for _ in $(seq 1 $((secs * 5))); do eval "$*" >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}

echo "== munged, slurmctld, slurmd on loopback (${SECONDS}s)"
mkdir -p "$WORK/munge" "$WORK/log" "$WORK/run" "$WORK/state" "$WORK/spool"
chmod 700 "$WORK/munge"
mungekey --create --keyfile="$WORK/munge/munge.key" >/dev/null 2>&1 \
  || dd if=/dev/urandom of="$WORK/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$WORK/munge/munge.key"
MUNGE_SOCKET="$WORK/munge/munge.socket"
munged --force --foreground --key-file="$WORK/munge/munge.key" --socket="$MUNGE_SOCKET" \
  --pid-file="$WORK/munge/munged.pid" --log-file="$WORK/log/munged.log" --seed-file="$WORK/munge/seed" \
  > "$WORK/log/munged.out.log" 2>&1 &
PIDS+=($!)
wait_until 10 '[ -S "$MUNGE_SOCKET" ]' || fail "munged did not come up"

NODE="$(hostname -s 2>/dev/null || true)"; NODE="${NODE:-localhost}"
CTLD_PORT=$(free_port); SLURMD_PORT=$(free_port)
while [ "$SLURMD_PORT" = "$CTLD_PORT" ]; do SLURMD_PORT=$(free_port); done
export SLURM_CONF="$WORK/slurm.conf"
# MinJobAge=4: sbatch --wait polls after 2 s, then every 8 then 32 s unless MinJobAge <= 4 (it
# keeps the interval under MinJobAge / 2 so that the record it waits for is not purged): 2 s.
cat > "$SLURM_CONF" <<EOF
ClusterName=trmtest
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmdParameters=config_overrides
SlurmctldPidFile=$WORK/run/slurmctld.pid
SlurmdPidFile=$WORK/run/slurmd.pid
SlurmctldLogFile=$WORK/log/slurmctld.log
SlurmdLogFile=$WORK/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MailProg=/bin/true
KillWait=10
InactiveLimit=0
MinJobAge=4
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=trm Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld -D -i -f "$SLURM_CONF" > "$WORK/log/slurmctld.out.log" 2>&1 &
PIDS+=($!)
wait_until 30 'scontrol ping | grep -q UP' || fail "slurmctld did not answer scontrol ping"
slurmd -D -N "$NODE" -f "$SLURM_CONF" > "$WORK/log/slurmd.out.log" 2>&1 &
PIDS+=($!)
wait_until 60 '[ "$(sinfo -h -n "$NODE" -o %t)" = idle ]' \
  || { sinfo -N -l || true; fail "node $NODE did not become idle"; }
echo "node $NODE idle (slurmctld :$CTLD_PORT, slurmd :$SLURMD_PORT)"

"$BIN/trm-data" build --input "$DATA" --tokenizer byte --max-length 48 --subsample-size 64 --output-dir "$WORK/ds" \
  > "$WORK/data.log" 2>&1 || fail "trm-data build"
STEPS=20
OVERRIDES="data_paths=[$WORK/ds] global_batch_size=8 max_steps=$STEPS checkpoint_interval_steps=10 keep_checkpoints=0
           threads=1 log_interval=10 eval_interval=0"

echo "== 1. sbatch --wait deploy/slurm/train.sbatch: 1 node x 2 ranks (${SECONDS}s)"
RDZV_PORT=$(free_port)
rc=0
env TRM_BIN_DIR="$BIN" TRM_NPROC_PER_NODE=2 TRM_RDZV_PORT="$RDZV_PORT" TRM_CONFIG=cfg_tiny \
    TRM_CONFIG_DIR="$SRC/configs" TRM_OVERRIDES="$OVERRIDES" \
  sbatch --wait --quiet --nodes 1 --cpus-per-task 2 --time 5 --chdir "$WORK" --output "$WORK/train.out" \
    "$SRC/deploy/slurm/train.sbatch" "run_dir=$WORK/slurm" || rc=$?
[ "$rc" -eq 0 ] || fail "the sbatch job exited $rc"
grep -q "rendezvous 127.0.0.1:$RDZV_PORT" "$WORK/train.out" || fail "train.sbatch did not meet at the node's NodeAddr"
test -f "$WORK/slurm/step_$STEPS/model.safetensors" || fail "no final checkpoint from the Slurm run"
grep -q ", 2 ranks) on cpu" "$WORK/train.out" || fail "the Slurm job did not train with 2 ranks"
echo "the Slurm job trained to step $STEPS"

echo "== 2. the same run under trm-launch --standalone (${SECONDS}s)"
set -f  # split on whitespace like train.sbatch does, no globbing
# shellcheck disable=SC2206
OV=($OVERRIDES)
set +f
"$BIN/trm-launch" --standalone --nproc-per-node 2 trm-train --config-name cfg_tiny --config-dir "$SRC/configs" \
  --no-progress "${OV[@]}" "run_dir=$WORK/direct" > "$WORK/direct.log" 2>&1 || fail "trm-launch --standalone"
for f in model optimizer; do
  cmp "$WORK/direct/step_$STEPS/$f.safetensors" "$WORK/slurm/step_$STEPS/$f.safetensors" \
    || fail "$f.safetensors differs between the Slurm run and the standalone one"
done
echo "the Slurm run ends with the standalone run's weights and optimizer state, byte for byte"

echo "== 3. sbatch deploy/slurm/workers.sbatch against a coordinator on loopback (${SECONDS}s)"
PORT=$(free_port); WMPORT=$(free_port)
export TRM_COORDINATOR="127.0.0.1:$PORT"
"$BIN/trm-coordinator" --listen "127.0.0.1:$PORT" --data-dir "$WORK/coord" --config-dir "$SRC/configs" \
  > "$WORK/coordinator.log" 2>&1 &
PIDS+=($!)
wait_until 30 '"$BIN/trmctl" workers' || fail "the coordinator did not come up"
JOB=$(env TRM_BIN_DIR="$BIN" TRM_WORKER_CPU_SLOTS=2 TRM_WORKER_WORK_DIR="$WORK/worker" \
        TRM_WORKER_METRICS="127.0.0.1:$WMPORT" \
      sbatch --parsable --nodes 1 --cpus-per-task 2 --time 5 --chdir "$WORK" --output "$WORK/workers.out" \
        "$SRC/deploy/slurm/workers.sbatch") || fail "sbatch workers.sbatch"
wait_until 60 '"$BIN/trmctl" workers | grep -q "^slurm-$NODE "' \
  || { "$BIN/trmctl" workers || true; fail "the worker of job $JOB did not register as slurm-$NODE"; }
"$BIN/trmctl" workers
scancel "$JOB"
wait_until 60 '[ -z "$(squeue -h -j "$JOB" -t all -o %T 2>/dev/null | grep -v -x -E "CANCELLED|COMPLETED")" ]' \
  || fail "job $JOB did not end after scancel"
wait_until 30 '! pgrep -f "work-dir $WORK/worker"' || fail "trm-worker outlived its job"
echo "the Slurm job's worker registered and stopped with the job (${SECONDS}s)"
