#!/usr/bin/env bash
# Start a real one-host SLURM cluster with NODES simulated nodes (default 2): for the tests, CI,
# and anyone who wants to try a multi-node job on one machine.
#
#   sudo cluster/local/up.sh [NODES]      # then: sinfo; mmdit-scale submit ... --cpu
#   sudo cluster/local/down.sh
#
# Installs SLURM and munge (Debian/Ubuntu packages) when they are missing, writes
# /etc/slurm/slurm.conf (so plain sinfo/sbatch/scancel work), names the nodes node1..nodeN in
# /etc/hosts (all 127.0.0.1, so a MASTER_ADDR taken from the node list resolves), and starts
# munged (unless one already runs), slurmctld and one slurmd per simulated node. What it started
# is recorded under /run/mmdit-slurm, so down.sh stops exactly that. Idempotent: running it again
# with the same NODES leaves a healthy cluster as it is.
# Timing settings make requeue fast (a requeued job runs again after about 10 s, not 2 minutes).
set -euo pipefail

NODES="${1:-2}"
CPUS_PER_NODE="${MMDIT_SLURM_CPUS:-4}"
STATE=/var/lib/mmdit-slurm
RUN=/run/mmdit-slurm
CONF=/etc/slurm/slurm.conf
MARK="# written by mmdit-scale cluster/local/up.sh"
HOSTS_MARK="# mmdit-scale local slurm nodes"
HERE="$(cd "$(dirname "$0")" && pwd)"

die() { echo "up.sh: $*" >&2; exit 1; }

[[ "$NODES" =~ ^[1-9][0-9]?$ ]] || die "NODES must be a number from 1 to 99, got '$NODES'"
[ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and starts daemons)"

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || missing+=(munge)
    [ ${#missing[@]} -eq 0 ] && return
    command -v apt-get >/dev/null || die "SLURM is not installed and apt-get is not available: install ${missing[*]}"
    echo "up.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # The package lists may be empty on a fresh machine: update once when the install fails.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

cluster_healthy() {
    alive "$RUN/slurmctld.pid" || return 1
    for i in $(seq 1 "$NODES"); do alive "$RUN/slurmd-node$i.pid" || return 1; done
    [ "$(cat "$RUN/nodes" 2>/dev/null)" = "$NODES" ] || return 1
    sinfo -h >/dev/null 2>&1
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        return  # a munged already answers on the default socket: use it, and leave it alone
    fi
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        mungekey -c -k /etc/munge/munge.key
    fi
    chown munge:munge /etc/munge /etc/munge/munge.key
    chmod 700 /etc/munge
    chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    runuser -u munge -- /usr/sbin/munged --force --pid-file=/run/munge/munged.pid
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.1
    done
    munge -n | unmunge >/dev/null || die "munged did not start"
    cp /run/munge/munged.pid "$RUN/munged.pid"
}

write_conf() {
    if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script: refusing to replace a real cluster's config"
    fi
    local host mem
    host="$(hostname)"
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / NODES ))
    mkdir -p /etc/slurm "$STATE/ctld" "$STATE/log"
    {
        echo "$MARK (NODES=$NODES); down.sh removes it"
        cat <<CONF
ClusterName=mmdit-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=6817
AuthType=auth/munge
# Short credential lifetime and scheduler intervals: a requeued job starts again after ~10 s.
AuthInfo=cred_expire=10
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=2,sched_interval=2
JobRequeue=1
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool/%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
# The simulated nodes claim CPUs the host may not have.
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
KillWait=10
MinJobAge=600
InactiveLimit=0
CONF
        for i in $(seq 1 "$NODES"); do
            echo "NodeName=node$i NodeHostname=$host NodeAddr=127.0.0.1 Port=$((17000 + i)) CPUs=$CPUS_PER_NODE RealMemory=$mem State=UNKNOWN"
        done
        echo "PartitionName=debug Nodes=node[1-$NODES] Default=YES MaxTime=INFINITE State=UP"
    } > "$CONF"
}

write_hosts() {
    # Rewritten in place (not renamed): /etc/hosts is often a bind mount in containers.
    local names kept
    names="$(for i in $(seq 1 "$NODES"); do printf 'node%s ' "$i"; done)"
    kept="$(grep -vF "$HOSTS_MARK" /etc/hosts || true)"
    printf '%s\n127.0.0.1 %s%s\n' "$kept" "$names" "$HOSTS_MARK" > /etc/hosts
}

wait_idle() {
    local state
    for _ in $(seq 150); do
        state="$(sinfo -h -N -o '%N %t' 2>/dev/null || true)"
        if [ "$(grep -cE ' (idle|mix|alloc)$' <<<"$state")" -eq "$NODES" ]; then
            return 0
        fi
        sleep 0.2
    done
    echo "$state" >&2
    die "the nodes did not become idle; see $STATE/log/"
}

install_packages
if cluster_healthy; then
    echo "up.sh: the local cluster is already up with $NODES node(s)"
    sinfo
    exit 0
fi
if [ -f "$RUN/nodes" ]; then
    "$HERE/down.sh"
fi
mkdir -p "$RUN"
start_munge
write_conf
write_hosts
slurmctld
for i in $(seq 1 "$NODES"); do
    mkdir -p "$STATE/spool/node$i"
    slurmd -N "node$i"
done
echo "$NODES" > "$RUN/nodes"
wait_idle
echo "up.sh: a SLURM cluster with $NODES node(s) is up (logs in $STATE/log)"
sinfo
