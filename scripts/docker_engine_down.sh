#!/usr/bin/env bash
# Stop the private Docker engine started by docker_engine_up.sh: remove its containers and
# networks, stop dockerd (and the containerd it started), keep its images (the cache).
# Idempotent; touches only the engine on its own socket and the processes it started.
set -euo pipefail

STATE="${HVD_DOCKER_STATE:-/tmp/hvd_trainer_docker}"
SOCK="$STATE/docker.sock"
export DOCKER_HOST="unix://$SOCK"
say() { printf '[docker-engine] %s\n' "$*"; }

pid=""
[ -f "$STATE/dockerd.pid" ] && pid=$(cat "$STATE/dockerd.pid")
[ -z "$pid" ] && [ -f "$STATE/dockerd.launch.pid" ] && pid=$(cat "$STATE/dockerd.launch.pid")
if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
  say "Engine is not running."
else
  if [ -S "$SOCK" ] && timeout 20 docker version >/dev/null 2>&1; then
    # Everything in this engine was made by hvd_trainer's scripts and tests.
    ids=$(timeout 20 docker ps -aq || true)
    [ -z "$ids" ] || timeout 60 docker rm -f $ids >/dev/null 2>&1 || true
    timeout 30 docker network prune -f >/dev/null 2>&1 || true
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  say "Engine stopped."
fi
# containerd and its shims that dockerd started for this engine (found by this engine's own
# exec root in their command line, ended by PID).
for p in $(pgrep -f -- "$STATE/exec" || true); do
  [ "$p" != "$$" ] && kill -KILL "$p" 2>/dev/null || true
done
# Mounts the engine may have left under its exec root.
for m in $(awk -v r="$STATE/exec" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r); do umount -l "$m" 2>/dev/null || true; done
rm -f "$SOCK" "$STATE/dockerd.pid" "$STATE/dockerd.launch.pid"
