#!/usr/bin/env bash
# Entry point of the hvd_trainer image.
#
#   worker     run sshd (port $HVD_SSH_PORT) that accepts the cluster key; ranks are started here
#   launcher   wait until every worker's sshd answers, run the pre-flight check, then run
#              $HVD_JOB on all workers with horovodrun (exit status = the job's)
#   anything else is executed as a command (e.g. `docker run IMAGE python -m hvd_trainer doctor`)
#
# The cluster's login key is generated at the first start into the shared volume $HVD_SSH_KEYS
# (whichever container comes first makes it, under a lock); each container makes its own sshd
# host keys. Nothing secret is in the image.
#
# Launcher settings (environment):
#   HVD_JOB               the command every rank runs (default: python -m hvd_trainer doctor)
#   HVD_PREPARE           a shell command run once on the launcher before the job (e.g. write data)
#   HVD_CONTROLLER        gloo (default) or mpi
#   HVD_SLOTS_PER_WORKER  ranks per worker (default 1)
#   HVD_NUM_WORKERS       wait for exactly this many workers (default: all that DNS lists)
#   HVD_WORKER_SERVICE    DNS name listing the workers (default: worker, the compose service)
#   HVD_NETWORK_INTERFACE passed to horovodrun --network-interface (default: horovodrun picks)
#   HVD_WAIT_SECONDS      how long to wait for the workers (default 120)
#   HVD_MAX_NP            set: an elastic job (Gloo) that grows up to this many ranks when workers are
#                         added (`up --scale worker=N` during the run) and shrinks when one is lost;
#                         the workers are found by scripts/elastic/discover_hosts_compose.sh
#   HVD_MIN_NP            elastic: the fewest ranks the job goes on with (default: the ranks it starts with)
set -euo pipefail

KEYS="${HVD_SSH_KEYS:-/keys}"
PORT="${HVD_SSH_PORT:-2222}"
# The compose cluster's discovery script for elastic jobs (in the image with the package).
DISCOVER="${HVD_DISCOVERY_SCRIPT:-/opt/hvd_trainer/src/scripts/elastic/discover_hosts_compose.sh}"
say() { printf '[%s] %s\n' "${ROLE:-hvd}" "$*"; }
die() { printf '\n[%s] ERROR: %s\n\n' "${ROLE:-hvd}" "$*" >&2; exit 1; }

ensure_cluster_key() {
  mkdir -p "$KEYS"
  chmod 700 "$KEYS"
  # flock: the launcher and every worker start at once on the same volume; one makes the key.
  (
    flock 9
    if [ ! -s "$KEYS/id_ed25519" ]; then
      ssh-keygen -q -t ed25519 -N '' -C "hvd_trainer compose cluster" -f "$KEYS/id_ed25519"
      say "Generated the cluster's ssh key in $KEYS."
    fi
  ) 9>"$KEYS/.lock"
  chmod 600 "$KEYS/id_ed25519"
}

write_ssh_client_config() {
  # The containers live on an internal network made for this job: host keys are new at every
  # start, so they are not pinned.
  mkdir -p /etc/ssh/ssh_config.d
  cat > /etc/ssh/ssh_config.d/hvd_trainer.conf <<CFG
Host *
  Port $PORT
  User root
  IdentityFile $KEYS/id_ed25519
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  BatchMode yes
  ConnectTimeout 5
  LogLevel ERROR
CFG
}

run_worker() {
  ensure_cluster_key
  write_ssh_client_config
  ssh-keygen -A >/dev/null
  mkdir -p /run/sshd /etc/ssh/sshd_config.d
  # Debian's sshd_config includes sshd_config.d first, so these settings win.
  cat > /etc/ssh/sshd_config.d/hvd_trainer.conf <<CFG
Port $PORT
PermitRootLogin prohibit-password
PubkeyAuthentication yes
AuthorizedKeysFile $KEYS/id_ed25519.pub
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
PrintMotd no
MaxStartups 100
MaxSessions 100
LogLevel ERROR
CFG
  say "sshd on port $PORT ($(hostname))."
  exec /usr/sbin/sshd -D -e
}

worker_addresses() {
  getent ahostsv4 "${HVD_WORKER_SERVICE:-worker}" 2>/dev/null | awk '{print $1}' | sort -u | tr '\n' ' '
}

wait_for_workers() {
  local deadline=$(( $(date +%s) + ${HVD_WAIT_SECONDS:-120} )) want="${HVD_NUM_WORKERS:-}" prev="" now ok a n
  while :; do
    now=$(worker_addresses)
    n=$(wc -w <<<"$now")
    if [ "$n" -gt 0 ] && { [ -z "$want" ] || [ "$n" -eq "$want" ]; } && [ "$now" = "$prev" ]; then
      ok=1
      for a in $now; do ssh "$a" true </dev/null >/dev/null 2>&1 || { ok=""; break; }; done
      if [ -n "$ok" ]; then WORKERS="$now"; return 0; fi
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      die "After ${HVD_WAIT_SECONDS:-120} s, the workers are not all reachable (DNS '${HVD_WORKER_SERVICE:-worker}' lists: ${now:-nothing}${want:+; expected $want}). Check 'docker compose logs worker'."
    fi
    prev="$now"
    sleep 1
  done
}

horovodrun_world() {
  # The hosts: a fixed list, or (HVD_MAX_NP set) the discovery script that lists the workers registered now.
  local np="$1" hosts="$2" max="${HVD_MAX_NP:-}" min
  if [ -z "$max" ]; then
    echo "-H $hosts"
    return 0
  fi
  min="${HVD_MIN_NP:-$np}"
  [ "$min" -le "$np" ] && [ "$np" -le "$max" ] \
    || die "HVD_MIN_NP=$min <= the $np starting ranks <= HVD_MAX_NP=$max does not hold: start between HVD_MIN_NP and HVD_MAX_NP ranks (--scale worker=N, times HVD_SLOTS_PER_WORKER), or change them."
  echo "--min-np $min --max-np $max --host-discovery-script $DISCOVER"
}

check_elastic_settings() {
  # Before any waiting: an elastic job's settings that are wrong whatever the workers.
  [ -n "${HVD_MAX_NP:-}" ] || return 0
  [[ "$HVD_MAX_NP" =~ ^[1-9][0-9]*$ && "${HVD_MIN_NP:-1}" =~ ^[1-9][0-9]*$ ]] \
    || die "HVD_MIN_NP='${HVD_MIN_NP:-}' and HVD_MAX_NP='$HVD_MAX_NP' must be whole numbers of ranks (HVD_MIN_NP may be left unset: the ranks started with)."
  [ "${HVD_CONTROLLER:-gloo}" = gloo ] \
    || die "An elastic job (HVD_MAX_NP=$HVD_MAX_NP) needs HVD_CONTROLLER=gloo: MPI cannot change the size of its world. Unset HVD_MAX_NP for a fixed MPI job."
}

run_launcher() {
  check_elastic_settings
  ensure_cluster_key
  write_ssh_client_config
  say "Waiting for the workers' sshd ..."
  wait_for_workers
  local slots="${HVD_SLOTS_PER_WORKER:-1}" hosts="" a np
  for a in $WORKERS; do hosts="$hosts${hosts:+,}$a:$slots"; done
  np=$(( $(wc -w <<<"$WORKERS") * slots ))
  say "Workers: $hosts"

  # Pre-flight: names, interface, ssh, distinct hostnames, before any rank starts.
  python - "$hosts" "${HVD_NETWORK_INTERFACE:-}" "$PORT" <<'PY'
import sys
from hvd_trainer.preflight import check_hosts, parse_hosts
problems = check_hosts(parse_hosts(sys.argv[1]), sys.argv[2] or None, ssh_port=int(sys.argv[3]))
for p in problems:
    print("pre-flight: " + p, file=sys.stderr)
sys.exit(1 if problems else 0)
PY

  if [ -n "${HVD_PREPARE:-}" ]; then
    say "Preparing: $HVD_PREPARE"
    bash -c "$HVD_PREPARE"
  fi
  local job="${HVD_JOB:-python -m hvd_trainer doctor}"
  eval "set -- $job"
  local iface=() world
  [ -z "${HVD_NETWORK_INTERFACE:-}" ] || iface=(--network-interface "$HVD_NETWORK_INTERFACE")
  world=$(horovodrun_world "$np" "$hosts")
  say "horovodrun -np $np $world --${HVD_CONTROLLER:-gloo}: $job"
  set +e
  # shellcheck disable=SC2086  # $world is a list of options without spaces inside them
  horovodrun -np "$np" $world "--${HVD_CONTROLLER:-gloo}" --ssh-port "$PORT" \
    --ssh-identity-file "$KEYS/id_ed25519" --disable-cache "${iface[@]}" "$@"
  local rc=$?
  set -e
  say "Job finished with exit status $rc."
  exit "$rc"
}

ROLE="${1:-worker}"
case "$ROLE" in
  worker) shift || true; run_worker ;;
  launcher) shift || true; run_launcher ;;
  *) ROLE=hvd; exec "$@" ;;
esac
