#!/usr/bin/env bash
# Stop the local cluster that cluster/local/up.sh started: cancel its jobs, stop its slurmd,
# slurmctld and (only if up.sh started it) munged by the pids it recorded, and remove its
# slurm.conf and /etc/hosts entries. Anything up.sh did not start is left alone.
set -uo pipefail

RUN=/run/mmdit-slurm
CONF=/etc/slurm/slurm.conf
MARK="# written by mmdit-scale cluster/local/up.sh"
HOSTS_MARK="# mmdit-scale local slurm nodes"

[ "$(id -u)" -eq 0 ] || { echo "down.sh: must run as root" >&2; exit 1; }
if [ ! -d "$RUN" ]; then
    echo "down.sh: no local cluster recorded in $RUN: nothing to stop"
    exit 0
fi

stop() {  # stop PIDFILE NAME: TERM, then KILL after 10 s; only a live pid named NAME
    local pidfile=$1 name=$2 pid
    [ -f "$pidfile" ] || return 0
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]; then
        kill "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$pidfile"
}

# Cancel the jobs first so no job step outlives its slurmd.
if [ -f "$RUN/slurmctld.pid" ] && kill -0 "$(cat "$RUN/slurmctld.pid")" 2>/dev/null; then
    jobs="$(squeue -h -o %i 2>/dev/null | sort -u)"
    if [ -n "$jobs" ]; then
        # shellcheck disable=SC2086
        scancel $jobs 2>/dev/null
        for _ in $(seq 100); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.1; done
    fi
fi
for pidfile in "$RUN"/slurmd-*.pid; do stop "$pidfile" slurmd; done
stop "$RUN/slurmctld.pid" slurmctld
stop "$RUN/munged.pid" munged
if [ -f "$CONF" ] && grep -qF "$MARK" "$CONF"; then rm -f "$CONF"; fi
if grep -qF "$HOSTS_MARK" /etc/hosts; then
    kept="$(grep -vF "$HOSTS_MARK" /etc/hosts)"
    printf '%s\n' "$kept" > /etc/hosts
fi
rm -rf "$RUN"
echo "down.sh: the local cluster is stopped"
