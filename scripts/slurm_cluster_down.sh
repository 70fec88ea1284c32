#!/usr/bin/env bash
# Stop the SLURM cluster that scripts/slurm_cluster_up.sh started: its jobs first, then the
# daemons whose PIDs it recorded (checking each PID still runs the same program), the
# /etc/slurm/slurm.conf link it made, and for several nodes the netns hosts they ran on. Nothing
# else is touched: not the packages, not a system munge or SLURM, not $HVD_SLURM_HOME (delete it
# by hand to forget the cluster). Idempotent. For several nodes give the same HVD_SLURM_NODES
# (or HVD_SLURM_HOME) as to the up script.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if ((${HVD_SLURM_NODES:-1} > 1)); then
    HOME_DIR=${HVD_SLURM_HOME:-/var/lib/hvd_trainer_slurm_${HVD_NETNS_PREFIX:-hvds}}
else
    HOME_DIR=${HVD_SLURM_HOME:-/var/lib/hvd_trainer_slurm}
fi
CONF=$HOME_DIR/slurm.conf
STARTED=$HOME_DIR/run/started

say() { echo "slurm_cluster_down: $*"; }

if [[ ! -s $STARTED ]]; then
    say "nothing to stop (no $STARTED)."
    exit 0
fi

pid_is() {
    local pid=$1 word=$2
    [[ -n $pid && -r /proc/$pid/cmdline ]] && tr '\0' ' ' </proc/"$pid"/cmdline | grep -qF -- "$word"
}
recorded_pid() { awk -v n="$1" '$1 == n {p = $2} END {print p}' "$STARTED"; }

# Jobs of this cluster would otherwise outlive slurmd as orphaned slurmstepd processes.
export SLURM_CONF=$CONF
# Several nodes: the client commands must run inside the cluster's network (the up script's wrappers).
[[ -d $HOME_DIR/bin ]] && PATH=$HOME_DIR/bin:$PATH
if pid_is "$(recorded_pid slurmctld)" "$CONF" && scontrol ping >/dev/null 2>&1; then
    jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
    if [[ -n ${jobs// /} ]]; then
        say "cancelling jobs: $jobs"
        # shellcheck disable=SC2086
        scancel $jobs 2>/dev/null
        for _ in $(seq 60); do
            [[ -z $(squeue -h -o %A 2>/dev/null) ]] && break
            sleep 0.5
        done
    fi
fi

stop() {  # stop NAME WORD: TERM, wait up to 10 s, then KILL
    local name=$1 word=$2 pid
    pid=$(recorded_pid "$name")
    if ! pid_is "$pid" "$word"; then
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 100); do
        pid_is "$pid" "$word" || { say "stopped $name (pid $pid)."; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
    say "killed $name (pid $pid) after 10 s."
}

# Reverse start order: slurmd and slurmctld still need munged to say goodbye.
for name in $(awk '$1 ~ /^slurmd/ {print $1}' "$STARTED" | sort -u); do stop "$name" "$CONF"; done
stop slurmctld "$CONF"
stop munged "$HOME_DIR/munge/munge.socket"

# The netns hosts the nodes ran on (this also ends anything a job left running there).
read -r _ prefix subnet < <(awk '$1 == "netns"' "$STARTED") || true
if [[ -n ${prefix:-} ]]; then
    HVD_NETNS_PREFIX=$prefix HVD_NETNS_SUBNET=$subnet "$HERE/netns_cluster_down.sh" >/dev/null && say "netns hosts '$prefix' down."
fi

link=$(awk '$1 == "link" {print $2}' "$STARTED")
if [[ -n $link && $(readlink "$link" 2>/dev/null) == "$CONF" ]]; then
    rm -f "$link"
fi
: >"$STARTED"
say "down."
