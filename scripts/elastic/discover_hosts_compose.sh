#!/usr/bin/env bash
# Host discovery for elastic training on the Docker compose cluster (docker/docker-compose.yml): the
# workers registered under the compose service's DNS name (one address per replica) whose sshd answers.
# `docker compose up --scale worker=N` during a run adds replicas, and so grows the job.
#   horovodrun -np 2 --min-np 2 --max-np 8 \
#     --host-discovery-script scripts/elastic/discover_hosts_compose.sh python -m hvd_trainer train ...
# HVD_WORKER_SERVICE: the service name (default worker); HVD_SLOTS_PER_WORKER: slots each (default 1);
# HVD_ELASTIC_PROBE_TIMEOUT: seconds to wait for a worker's ssh (default 3). The ssh port and key are
# the cluster's (docker/entrypoint.sh writes them into the ssh client configuration).
set -u
service="${HVD_WORKER_SERVICE:-worker}"
slots="${HVD_SLOTS_PER_WORKER:-1}"
timeout_s="${HVD_ELASTIC_PROBE_TIMEOUT:-3}"
for address in $(getent ahostsv4 "$service" 2>/dev/null | awk '{print $1}' | sort -u); do
  if timeout "$timeout_s" ssh -o BatchMode=yes -o ConnectTimeout="$timeout_s" "$address" true >/dev/null 2>&1; then
    echo "$address:$slots"
  fi
done
exit 0
