#!/usr/bin/env bash
# Host discovery for elastic training on the Docker compose cluster (docker/docker-compose.yml):
# the workers that registered. Each worker container, when it starts, writes its hostname into
# the shared registry directory (HVD_ELASTIC_REGISTRY, default /shared/elastic_workers): one file
# per worker, holding "slots" (default 1). `docker compose up --scale worker=N` during a run adds
# workers; a worker that stops answering ssh is left out (its file may stay behind).
#   horovodrun -np 2 --min-np 2 --max-np 8 \
#     --host-discovery-script scripts/elastic/discover_hosts_compose.sh python -m hvd_trainer train ...
# A worker registers itself with:  scripts/elastic/discover_hosts_compose.sh --register
set -u
registry="${HVD_ELASTIC_REGISTRY:-/shared/elastic_workers}"
if [ "${1:-}" = "--register" ]; then
  mkdir -p "$registry" && echo "${HVD_ELASTIC_SLOTS:-1}" > "$registry/$(hostname)"
  exit $?
fi
[ -d "$registry" ] || exit 0
timeout_s="${HVD_ELASTIC_PROBE_TIMEOUT:-3}"
for entry in "$registry"/*; do
  [ -f "$entry" ] || continue
  host="$(basename "$entry")"
  slots="$(tr -d '[:space:]' < "$entry")"
  if [ "$host" = "$(hostname)" ] || timeout "$timeout_s" ssh -o BatchMode=yes -o ConnectTimeout="$timeout_s" "$host" true >/dev/null 2>&1; then
    echo "$host:${slots:-1}"
  fi
done
exit 0
