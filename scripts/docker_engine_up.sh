#!/usr/bin/env bash
# Start a private Docker engine for hvd_trainer's Docker tests, apart from any system engine:
# its own socket, data root (images, kept between runs as a cache), exec root and config file.
# It creates no default bridge, touches no iptables rules, enables no IP forwarding or
# masquerading, and gives containers 127.0.0.1 as their DNS server: containers reach only each
# other on the internal networks the tests create.
#
#   scripts/docker_engine_up.sh          # prints the DOCKER_HOST to export
#   scripts/docker_engine_down.sh
#
# Idempotent (an engine already answering on the socket is left as it is). Needs root and
# Debian's docker.io and docker-compose (installed when missing on Debian/Ubuntu).
# Knobs: HVD_DOCKER_STATE (socket, exec root, log; default /tmp/hvd_trainer_docker),
#        HVD_DOCKER_DATA (data root; default ~/.cache/hvd_trainer/docker/engine).
set -euo pipefail

STATE="${HVD_DOCKER_STATE:-/tmp/hvd_trainer_docker}"
DATA="${HVD_DOCKER_DATA:-$HOME/.cache/hvd_trainer/docker/engine}"
SOCK="$STATE/docker.sock"
export DOCKER_HOST="unix://$SOCK"

say() { printf '[docker-engine] %s\n' "$*"; }
die() { printf '\n[docker-engine] ERROR: %s\n\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "A private Docker engine needs root. Run this as root, or point DOCKER_HOST at an engine you can use."

# Can this machine run containers at all? dockerd needs mount, pid, network, uts and ipc
# namespaces and the cgroup file system; without them no package or setting helps, so say so
# plainly (the tests skip with this reason) instead of failing later in dockerd's log.
if ! unshare --mount --pid --net --uts --ipc --fork true 2>/dev/null; then
  die "This machine cannot run containers: creating mount/pid/net/uts/ipc namespaces is refused (unshare fails; an unprivileged container or a restricted kernel)."
fi
if ! grep -qE '^cgroup2? ' /proc/mounts; then
  die "This machine cannot run containers: no cgroup file system is mounted (/sys/fs/cgroup)."
fi

apt_install() {
  # Debian's packages, never started as system services (policy-rc.d refuses that while
  # installing): the engine is started below, on its own socket.
  command -v apt-get >/dev/null 2>&1 || die "$* missing and this is not Debian/Ubuntu; install Docker Engine and a compose CLI, and run this again."
  say "Installing Debian's $* (the engine is started here, never as a system service)."
  local made_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  local apt=(apt-get -o DPkg::Lock::Timeout=600)
  "${apt[@]}" install -y -q --no-install-recommends "$@" \
    || { "${apt[@]}" update -q && "${apt[@]}" install -y -q --no-install-recommends "$@"; } \
    || { [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d; die "apt-get could not install $*."; }
  [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
}

has_compose() {
  command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1
}

# The engine (dockerd, containerd, runc) and a compose CLI: Debian 12 packages compose v1.29
# (docker-compose, Debian's maintained Python build); the v2 plugin is used instead if present.
want=()
command -v dockerd >/dev/null 2>&1 || want+=(docker.io)
command -v docker >/dev/null 2>&1 && has_compose || want+=(docker-compose)
[ ${#want[@]} -eq 0 ] || apt_install "${want[@]}"
command -v docker >/dev/null 2>&1 || die "The docker client is missing (apt-get install docker.io)."
has_compose || die "No compose CLI (docker-compose, or the docker compose plugin) is installed."

if [ -S "$SOCK" ] && docker version >/dev/null 2>&1; then
  say "Engine already up. Use: export DOCKER_HOST=$DOCKER_HOST"
  exit 0
fi
if [ -f "$STATE/dockerd.pid" ] && kill -0 "$(cat "$STATE/dockerd.pid")" 2>/dev/null; then
  "$(dirname "${BASH_SOURCE[0]}")/docker_engine_down.sh" >/dev/null
fi

mkdir -p "$STATE/exec" "$DATA"
echo '{}' > "$STATE/daemon.json"   # ignore /etc/docker/daemon.json: this engine is configured here only
setsid dockerd \
  --config-file "$STATE/daemon.json" \
  --data-root "$DATA" \
  --exec-root "$STATE/exec" \
  --pidfile "$STATE/dockerd.pid" \
  -H "unix://$SOCK" \
  --bridge=none --iptables=false --ip-forward=false --ip-masq=false \
  --userland-proxy=false \
  --dns 127.0.0.1 \
  --log-level warn \
  </dev/null >"$STATE/dockerd.log" 2>&1 &
echo $! > "$STATE/dockerd.launch.pid"

for _ in $(seq 1 120); do
  if docker version >/dev/null 2>&1; then
    say "Engine up (data root $DATA). Use: export DOCKER_HOST=$DOCKER_HOST"
    exit 0
  fi
  kill -0 "$(cat "$STATE/dockerd.launch.pid")" 2>/dev/null || break
  sleep 0.5
done
tail -20 "$STATE/dockerd.log" >&2 || true
die "dockerd did not come up (log: $STATE/dockerd.log)."
