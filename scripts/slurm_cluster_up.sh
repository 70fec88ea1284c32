#!/usr/bin/env bash
# Install, configure and start a one-node SLURM cluster on this machine, for the tests and for
# anyone who wants to try slurm/*.sbatch before using a real cluster:
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
# Exit status: 0 up; 77 this machine cannot run it (not root, packages cannot be installed),
# with the reason on stderr; 1 anything else (the daemon logs are named in the message).
set -euo pipefail

HOME_DIR=${HVD_SLURM_HOME:-/var/lib/hvd_trainer_slurm}
CTLD_PORT=${HVD_SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${HVD_SLURM_SLURMD_PORT:-6818}
NODE=$(hostname -s)
# Slurm's node address; 127.0.0.1 keeps the daemons off the network.
ADDR=${HVD_SLURM_ADDR:-127.0.0.1}
CPUS=${HVD_SLURM_CPUS:-$(nproc)}
((CPUS >= 2)) || CPUS=2   # the tests run 2-task jobs; config_overrides allows more than nproc
TEMPLATE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/slurm/slurm.conf.in"
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

# ---- 2. already up? --------------------------------------------------------------------------
export SLURM_CONF=$CONF
if running munged "$HOME_DIR/munge/munge.socket" && running slurmctld "$CONF" && running slurmd "$CONF"; then
    if scontrol ping >/dev/null 2>&1; then
        say "already up (SLURM_CONF=$CONF)."
        exit 0
    fi
fi
# Partly up (a daemon died): stop what is left of ours and start cleanly.
if [[ -s $STARTED ]]; then
    say "a previous start is partly running; stopping it first."
    HVD_SLURM_HOME=$HOME_DIR "$(dirname "${BASH_SOURCE[0]}")/slurm_cluster_down.sh" >/dev/null
fi

for port in "$CTLD_PORT" "$SLURMD_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        fail "port $port is in use by another program (another SLURM?). Stop it, or choose free ports with HVD_SLURM_CTLD_PORT / HVD_SLURM_SLURMD_PORT."
    fi
done

# ---- 3. configuration ------------------------------------------------------------------------
mkdir -p "$HOME_DIR"/{munge,ctld,slurmd,run,log}
chmod 0755 "$HOME_DIR"
chmod 0700 "$HOME_DIR/munge"
sed -e "s|@STATE@|$HOME_DIR|g" -e "s|@NODE@|$NODE|g" -e "s|@ADDR@|$ADDR|g" -e "s|@CPUS@|$CPUS|g" \
    -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" "$TEMPLATE" >"$CONF.tmp"
mv "$CONF.tmp" "$CONF"
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

# -c: a cold start forgets jobs of an earlier run of this cluster.
start slurmctld "$HOME_DIR/log/slurmctld.out" slurmctld -D -c -f "$CONF"
start slurmd "$HOME_DIR/log/slurmd.out" slurmd -D -f "$CONF" -N "$NODE"

# ---- 5. wait until the node takes jobs -------------------------------------------------------
state=""
for i in $(seq 150); do
    state=$(sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n1 || true)
    case $state in
        idle | mixed | allocated) break ;;
        down* | drain* | fail*)
            if ((i % 10 == 0)); then scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true; fi
            ;;
    esac
    running slurmctld "$CONF" || fail "slurmctld exited; see $HOME_DIR/log/slurmctld.log."
    running slurmd "$CONF" || fail "slurmd exited; see $HOME_DIR/log/slurmd.log."
    sleep 0.2
done
[[ $state == idle || $state == mixed || $state == allocated ]] ||
    fail "node $NODE is '$state' after 30 s; see $HOME_DIR/log/slurmctld.log and slurmd.log."

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
