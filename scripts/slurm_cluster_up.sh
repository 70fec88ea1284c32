#!/usr/bin/env bash
# Install, configure and start a SLURM cluster on this machine, for the tests and for anyone who
# wants to try slurm/*.sbatch before using a real cluster:
#
#   sudo scripts/slurm_cluster_up.sh          # idempotent: does nothing when already up
#   export SLURM_CONF=/var/lib/hvd_trainer_slurm/slurm.conf   (printed at the end)
#   sbatch slurm/train.sbatch doctor
#   sudo scripts/slurm_cluster_down.sh        # stops only what this script started
#
# It runs its own munged, slurmctld and slurmd (no systemd, no cgroups), all of them as root,
# with every file under $HVD_SLURM_HOME; the PIDs it started are recorded in
# $HVD_SLURM_HOME/run/started so that the down script stops those and nothing else.
#
# Several nodes (HVD_SLURM_NODES=N, N >= 2): the nodes are the hosts h1..hN of a netns cluster
# (scripts/netns_cluster_up.sh; prefix HVD_NETNS_PREFIX, default hvds, on HVD_NETNS_SUBNET,
# default 10.213.49), each with its own hostname, address and slurmd (NodeName=hN); slurmctld
# runs on h1, and one munged serves every host through its socket on the shared file system
# (the hosts share the file system, as nodes share NFS). HVD_SLURM_HOME defaults to
# /var/lib/hvd_trainer_slurm_<prefix>. The client commands reach slurmctld only from inside the
# cluster's network: $HVD_SLURM_HOME/bin holds sbatch, squeue, scontrol, ... that run on h1
# (or directly, when already on a cluster host); put it first on PATH:
#
#   sudo HVD_SLURM_NODES=2 scripts/slurm_cluster_up.sh
#   export PATH=/var/lib/hvd_trainer_slurm_hvds/bin:$PATH
#   sbatch --nodes=2 slurm/train_multinode.sbatch doctor
#   sudo HVD_SLURM_NODES=2 scripts/slurm_cluster_down.sh   # also takes the netns cluster down
#
# Exit status: 0 up; 77 this machine cannot run it (not root, packages cannot be installed),
# with the reason on stderr; 1 anything else (the daemon logs are named in the message).
set -euo pipefail

NODES=${HVD_SLURM_NODES:-1}
[[ $NODES =~ ^[0-9]+$ ]] && ((NODES >= 1 && NODES <= 16)) || { echo "slurm_cluster_up: error: HVD_SLURM_NODES must be 1 to 16, not '$NODES'." >&2; exit 1; }
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if ((NODES > 1)); then
    export HVD_NETNS_PREFIX=${HVD_NETNS_PREFIX:-hvds} HVD_NETNS_SUBNET=${HVD_NETNS_SUBNET:-10.213.49}
    HOME_DIR=${HVD_SLURM_HOME:-/var/lib/hvd_trainer_slurm_$HVD_NETNS_PREFIX}
else
    HOME_DIR=${HVD_SLURM_HOME:-/var/lib/hvd_trainer_slurm}
fi
CTLD_PORT=${HVD_SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${HVD_SLURM_SLURMD_PORT:-6818}
NODE=$(hostname -s)
# Slurm's node address; 127.0.0.1 keeps the daemons off the network.
ADDR=${HVD_SLURM_ADDR:-127.0.0.1}
CPUS=${HVD_SLURM_CPUS:-$(nproc)}
((CPUS >= 2)) || CPUS=2   # the tests run 2-task jobs; config_overrides allows more than nproc
TEMPLATE="$HERE/slurm/slurm.conf.in"
CONF=$HOME_DIR/slurm.conf
STARTED=$HOME_DIR/run/started
PACKAGES=(slurmctld slurmd slurm-client munge)

say() { echo "slurm_cluster_up: $*"; }
cannot() { echo "slurm_cluster_up: cannot run here: $*" >&2; exit 77; }
fail() { echo "slurm_cluster_up: error: $*" >&2; exit 1; }

# True when PID is alive and its command line contains WORD (guards against a reused PID).
pid_is() {
    local pid=$1 word=$2
    [[ -n $pid && -r /proc/$pid/cmdline ]] && tr '\0' ' ' </proc/"$pid"/cmdline | grep -qF -- "$word"
}

recorded_pid() { [[ -f $STARTED ]] && awk -v n="$1" '$1 == n {p = $2} END {print p}' "$STARTED"; }

running() { pid_is "$(recorded_pid "$1")" "$2"; }

[[ $(id -u) == 0 ]] || cannot "it must run as root (slurmd starts jobs as their owner; munged and the daemons run as root here)."

# ---- 1. packages -----------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
    || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null || cannot "slurmctld/slurmd/munge are missing and there is no apt-get to install them."
    say "installing ${PACKAGES[*]} (Debian packages, --no-install-recommends)"
    # A policy-rc.d or a missing systemd keeps the packages' own services from starting; this
    # script starts its own daemons either way. Another apt may hold the lock: wait for it.
    apt_install() {
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
            --no-install-recommends "${PACKAGES[@]}" >"$1" 2>&1
    }
    log=$(mktemp)
    if ! apt_install "$log"; then
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -q >>"$log" 2>&1 || true
        apt_install "$log" || { tail -n 20 "$log" >&2; rm -f "$log"; cannot "apt-get could not install ${PACKAGES[*]}."; }
    fi
    rm -f "$log"
fi
[[ -f $TEMPLATE ]] || fail "the config template $TEMPLATE is missing."

# ---- 1b. the nodes: this machine, or the hosts h1..hN of a netns cluster (started after 2) ---
if ((NODES > 1)); then
    . "$HERE/netns/common.sh"
    NODE_NAMES=() NODE_ADDRS=()
    for i in $(seq "$NODES"); do NODE_NAMES+=("$(host_name "$i")"); NODE_ADDRS+=("$(host_addr "$i")"); done
    ON_HOST="$HERE/netns/on_host.sh"   # ON_HOST NODE CMD...: run CMD in NODE's namespaces
else
    NODE_NAMES=("$NODE") NODE_ADDRS=("$ADDR")
    ON_HOST=""
fi
CTLD_NODE=${NODE_NAMES[0]}
PMIX_TMP=/run/hvd_trainer_slurm_pmix
NODE_LIST=$(IFS=,; echo "${NODE_NAMES[*]}")

# The client commands: on a node of the cluster (slurmctld listens only inside its network).
BIN=$HOME_DIR/bin
write_client_wrappers() {
    local cmd real
    mkdir -p "$BIN"
    for cmd in sbatch squeue scontrol scancel sinfo srun salloc sacct sstat; do
        real=$(command -v "$cmd") || continue
        cat >"$BIN/$cmd" <<WRAP
#!/bin/sh
# $cmd of the hvd_trainer SLURM cluster under $HOME_DIR (written by slurm_cluster_up.sh): runs on
# $CTLD_NODE, or directly when already on a host of the cluster (in one of its network namespaces).
export SLURM_CONF="$CONF" HVD_NETNS_PREFIX="$HVD_NETNS_PREFIX" HVD_NETNS_SUBNET="$HVD_NETNS_SUBNET" HVD_NETNS_STATE="$HVD_NETNS_STATE"
me=\$(readlink /proc/self/ns/net)
for f in "$HVD_NETNS_STATE"/run/h*.holder.pid; do
    [ "\$me" = "\$(readlink "/proc/\$(cat "\$f" 2>/dev/null)/ns/net" 2>/dev/null)" ] && exec "$real" "\$@"
done
exec "$HERE/netns/on_host.sh" "$CTLD_NODE" "$real" "\$@"
WRAP
        chmod 0755 "$BIN/$cmd"
    done
}
client() { if ((NODES > 1)); then "$BIN/$1" "${@:2}"; else "$@"; fi; }
all_slurmd_running() {
    local n
    for n in "${NODE_NAMES[@]}"; do running "slurmd-$n" "$CONF" || return 1; done
}

# ---- 2. already up? --------------------------------------------------------------------------
export SLURM_CONF=$CONF
if running munged "$HOME_DIR/munge/munge.socket" && running slurmctld "$CONF" && all_slurmd_running; then
    if client scontrol ping >/dev/null 2>&1; then
        say "already up (SLURM_CONF=$CONF)."
        exit 0
    fi
fi
# Partly up (a daemon died): stop what is left of ours and start cleanly.
if [[ -s $STARTED ]]; then
    say "a previous start is partly running; stopping it first."
    HVD_SLURM_HOME=$HOME_DIR "$(dirname "${BASH_SOURCE[0]}")/slurm_cluster_down.sh" >/dev/null
fi

if ((NODES > 1)); then
    # The netns script explains itself when the machine cannot (no namespaces): exit 77 then.
    if ! netns_out=$("$HERE/netns_cluster_up.sh" "$NODES" 2>&1); then
        if grep -q "cannot create network namespaces\|needs root" <<<"$netns_out"; then cannot "$netns_out"; fi
        fail "the netns cluster did not come up: $netns_out"
    fi
fi
# (Netns hosts have network namespaces of their own, where the ports are free.)
((NODES > 1)) || for port in "$CTLD_PORT" "$SLURMD_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        fail "port $port is in use by another program (another SLURM?). Stop it, or choose free ports with HVD_SLURM_CTLD_PORT / HVD_SLURM_SLURMD_PORT."
    fi
done

# ---- 3. configuration ------------------------------------------------------------------------
mkdir -p "$HOME_DIR"/{munge,ctld,slurmd,run,log}
chmod 0755 "$HOME_DIR"
chmod 0700 "$HOME_DIR/munge"
node_lines=""
for i in "${!NODE_NAMES[@]}"; do
    mkdir -p "$HOME_DIR/slurmd/${NODE_NAMES[i]}"
    node_lines+="NodeName=${NODE_NAMES[i]} NodeAddr=${NODE_ADDRS[i]} NodeHostname=${NODE_NAMES[i]} CPUs=$CPUS State=UNKNOWN"$'\n'
done
sed -e "s|@STATE@|$HOME_DIR|g" -e "s|@CTLD_NAME@|$CTLD_NODE|g" -e "s|@CTLD_ADDR@|${NODE_ADDRS[0]}|g" \
    -e "s|@NODE_LIST@|$NODE_LIST|g" \
    -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" "$TEMPLATE" |
    NODE_LINES=${node_lines%$'\n'} awk '$0 == "@NODE_LINES@" {print ENVIRON["NODE_LINES"]; next} {print}' >"$CONF.tmp"
mv "$CONF.tmp" "$CONF"
if ((NODES > 1)); then
    write_client_wrappers
    # Slurm's PMIx plugin makes per-step folders under /tmp by default; the netns hosts share
    # /tmp, so two nodes' folders of one step would collide. /run is each host's own.
    echo "PMIxCliTmpDirBase=$PMIX_TMP" >"$HOME_DIR/mpi.conf"
    for n in "${NODE_NAMES[@]}"; do "$ON_HOST" "$n" mkdir -p "$PMIX_TMP"; done
fi
# slurmd and slurmctld read cgroup.conf only with cgroup plugins; an empty one silences a warning.
: >"$HOME_DIR/cgroup.conf"

KEY=$HOME_DIR/munge/munge.key
if [[ ! -s $KEY ]]; then
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile="$KEY" --force
    else
        dd if=/dev/urandom of="$KEY" bs=1024 count=1 status=none
    fi
fi
chmod 0400 "$KEY"

# ---- 4. daemons (each in the foreground of its own session; $! is its PID) -------------------
: >"$STARTED"
# The down script takes the netns hosts down with the cluster.
((NODES == 1)) || echo "netns $HVD_NETNS_PREFIX $HVD_NETNS_SUBNET" >>"$STARTED"
start() {  # start NAME LOG COMMAND...
    local name=$1 log=$2
    shift 2
    setsid "$@" >>"$log" 2>&1 </dev/null &
    echo "$name $!" >>"$STARTED"
}

start munged "$HOME_DIR/log/munged.out" munged -F --force \
    --socket="$HOME_DIR/munge/munge.socket" --key-file="$KEY" \
    --pid-file="$HOME_DIR/run/munged.pid" --log-file="$HOME_DIR/log/munged.log" \
    --seed-file="$HOME_DIR/munge/munged.seed"
for _ in $(seq 50); do [[ -S $HOME_DIR/munge/munge.socket ]] && break; sleep 0.1; done
[[ -S $HOME_DIR/munge/munge.socket ]] || fail "munged did not start; see $HOME_DIR/log/munged.log."

# slurmd (22.05) will not start without a cgroup file system on /sys/fs/cgroup, even with
# proctrack/linuxproc and task/none; a netns host has a fresh /sys (ip netns exec) without it.
# Mount there what this machine has mounted (same hierarchies, seen from the host's namespace).
mirror_cgroups() {  # mirror_cgroups NODE
    local mounts
    mounts=$(awk '$2 ~ "^/sys/fs/cgroup" && ($3 == "cgroup" || $3 == "cgroup2" || $3 == "tmpfs") {print $3, $2, $4}' /proc/mounts)
    [[ -n $mounts ]] || return 0
    MOUNTS=$mounts "$ON_HOST" "$1" sh -euc '
        mountpoint -q /sys/fs/cgroup && exit 0
        printf "%s\n" "$MOUNTS" | while read -r type dir opts; do
            mkdir -p "$dir"
            mount -t "$type" -o "$opts" "$type" "$dir"
        done
        mountpoint -q /sys/fs/cgroup || mount -t tmpfs -o mode=0755 cgroup /sys/fs/cgroup' \
        || fail "could not mount the cgroup file system on host $1 (slurmd needs one)."
}
if [[ -n $ON_HOST ]]; then
    for n in "${NODE_NAMES[@]}"; do mirror_cgroups "$n"; done
fi

# -c: a cold start forgets jobs of an earlier run of this cluster. On netns hosts the daemon
# starts through on_host.sh, which execs it (nsenter, env): $! is the daemon's PID all the same.
start slurmctld "$HOME_DIR/log/slurmctld.out" ${ON_HOST:+"$ON_HOST" "$CTLD_NODE"} slurmctld -D -c -f "$CONF"
for n in "${NODE_NAMES[@]}"; do
    start "slurmd-$n" "$HOME_DIR/log/slurmd.$n.out" ${ON_HOST:+"$ON_HOST" "$n"} slurmd -D -f "$CONF" -N "$n"
done

# ---- 5. wait until every node takes jobs ---------------------------------------------------
for n in "${NODE_NAMES[@]}"; do
    state=""
    for i in $(seq 150); do
        state=$(client sinfo -h -N -n "$n" -o %T 2>/dev/null | head -n1 || true)
        case $state in
            idle | mixed | allocated) break ;;
            down* | drain* | fail*)
                if ((i % 10 == 0)); then client scontrol update NodeName="$n" State=RESUME >/dev/null 2>&1 || true; fi
                ;;
        esac
        running slurmctld "$CONF" || fail "slurmctld exited; see $HOME_DIR/log/slurmctld.log."
        running "slurmd-$n" "$CONF" || fail "slurmd of $n exited; see $HOME_DIR/log/slurmd.$n.log."
        sleep 0.2
    done
    [[ $state == idle || $state == mixed || $state == allocated ]] ||
        fail "node $n is '$state' after 30 s; see $HOME_DIR/log/slurmctld.log and slurmd.$n.log."
done
if ((NODES > 1)); then
    say "up: nodes $NODE_LIST ($CPUS CPUs each, addresses ${NODE_ADDRS[*]}), slurmctld on $CTLD_NODE, partition debug. SLURM_CONF=$CONF; put $BIN first on PATH for sbatch, squeue, scontrol, ..."
    exit 0
fi

# Client commands with no SLURM_CONF read /etc/slurm/slurm.conf: point it at ours unless the
# machine has its own SLURM configuration.
LINK=/etc/slurm/slurm.conf
if [[ ! -e $LINK && ! -L $LINK ]] || [[ $(readlink "$LINK" 2>/dev/null) == "$CONF" ]]; then
    mkdir -p /etc/slurm && ln -sfn "$CONF" "$LINK" && echo "link $LINK" >>"$STARTED"
    hint="sbatch, squeue and srun find it through $LINK."
else
    hint="$LINK belongs to another SLURM: export SLURM_CONF=$CONF to use this one."
fi
say "up: node $NODE ($CPUS CPUs), partition debug. SLURM_CONF=$CONF; $hint"
