#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for running a sweep's SLURM launcher against
# a real sbatch/squeue/scancel (e.g. in tests) without a cluster. Debian/Ubuntu; needs root.
#   bash launch/slurm_local.sh         install slurm-wlm + munge if sbatch is missing, write
#                                      /etc/slurm/slurm.conf (one node, partition "debug"), start
#                                      munged, slurmctld and slurmd, wait until the node is idle
#   bash launch/slurm_local.sh stop    stop the three daemons started by this script
#   SLURM_LOCAL_TIMEOUT=60  seconds to wait for the node to come up
# Running it again while its daemons are up with the same config changes nothing. Jobs run as root
# on this machine, see the same filesystem, start in the submitting directory and get its
# environment (--export=ALL). No accounting (sacct does not work): finished jobs stay in
# `scontrol show job` for 5 minutes and are logged in /var/log/slurm/jobcomp.log.
# Logs: /var/log/slurm/. Refuses to overwrite a slurm.conf that this script did not write.
set -euo pipefail
die() { echo "error: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts daemons)"

CONF=/etc/slurm/slurm.conf MARK="# written by launch/slurm_local.sh"
CTLD_PID=/run/slurm/slurmctld.pid SLURMD_PID=/run/slurm/slurmd.pid MUNGE_PID=/run/munge/munged.pid
NODE=$(hostname -s 2>/dev/null || true); NODE=${NODE:-localhost}
TIMEOUT=${SLURM_LOCAL_TIMEOUT:-60}

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
stop_one() {  # stop the daemon whose pid is in $1 (only that process), wait until it is gone
  alive "$1" || { rm -f "$1"; return 0; }
  local pid i; pid=$(cat "$1"); kill "$pid" 2>/dev/null || true
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  rm -f "$1"
}
stop_all() { stop_one "$SLURMD_PID"; stop_one "$CTLD_PID"; stop_one "$MUNGE_PID"; }
node_state() { sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1; }
ready() {
  local s cpus deadline=$((SECONDS + TIMEOUT))
  until s=$(node_state) && [[ $s =~ ^(idle|mixed|allocated|completing)$ ]]; do
    [ $SECONDS -lt $deadline ] || die "node $NODE not idle after ${TIMEOUT}s (state: ${s:-no answer}); see /var/log/slurm/"
    sleep 0.5
  done
  cpus=$(sinfo -h -n "$NODE" -o %c | head -1)
  echo "slurm ready: partition debug, node $NODE, $cpus cpus"
}

case "${1:-start}" in
  stop) stop_all; echo "slurm stopped"; exit 0 ;;
  start) ;;
  *) die "usage: bash launch/slurm_local.sh [start|stop]" ;;
esac

# 1. Packages.
if ! command -v sbatch >/dev/null || ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/tmp/slurm_local.apt.log 2>&1 || die "apt-get update failed (mirror unreachable?); see /tmp/slurm_local.apt.log"
  apt-get install -y -q slurm-wlm munge >>/tmp/slurm_local.apt.log 2>&1 \
    || die "apt-get install slurm-wlm munge failed; see /tmp/slurm_local.apt.log"
fi

# 2. slurm.conf: this machine's CPUs and memory, as slurmd itself measures them.
if [ -e "$CONF" ] && ! grep -qxF "$MARK" "$CONF"; then
  die "$CONF exists and was not written by this script; not overwriting it"
fi
HW=$(slurmd -C 2>/dev/null | head -1) || true
CPUS=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$HW"); CPUS=${CPUS:-$(nproc)}
MEM=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$HW"); MEM=${MEM:-$(free -m | awk '/^Mem:/{print $2}')}
NEW_CONF="$MARK
ClusterName=local
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
EnforcePartLimits=ALL
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP"
# A second run with the same config and all daemons up leaves the cluster, and its jobs, alone.
if alive "$MUNGE_PID" && alive "$CTLD_PID" && alive "$SLURMD_PID" && [ "$(cat "$CONF")" = "$NEW_CONF" ]; then
  ready; exit 0
fi
stop_all  # running jobs survive a daemon restart; slurmctld recovers them from its state
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
echo "$NEW_CONF" >"$CONF"

# 3. munge key and daemons (plain background daemons: no systemd needed).
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
    || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none || die "cannot create munge key"
fi
chown -R munge:munge /etc/munge && chmod 700 /etc/munge && chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
runuser -u munge -- munged || die "munged did not start; see /var/log/munge/munged.log"
munge -n | unmunge >/dev/null 2>&1 || die "munge does not work (munge -n | unmunge failed)"
slurmctld || die "slurmctld did not start; see /var/log/slurm/slurmctld.log"
slurmd -N "$NODE" || die "slurmd did not start; see /var/log/slurm/slurmd.log"

# 4. Wait for the node.
ready
