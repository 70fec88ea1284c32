#!/usr/bin/env bash
# Host discovery for elastic training inside a SLURM allocation: the job's nodes that answer.
#   horovodrun -np $SLURM_NNODES --min-np 2 --max-np $SLURM_NNODES \
#     --host-discovery-script scripts/elastic/discover_hosts_slurm.sh python -m hvd_trainer train ...
# A node is listed when `ssh <node> true` succeeds within HVD_ELASTIC_PROBE_TIMEOUT seconds (default 3);
# slots per node: HVD_ELASTIC_SLOTS, else SLURM_NTASKS_PER_NODE, else 1. A node that stops answering
# (crashed, drained) is dropped from the job; one that answers again rejoins.
set -u
nodes="${SLURM_JOB_NODELIST:-${SLURM_NODELIST:-}}"
[ -n "$nodes" ] || { echo "discover_hosts_slurm.sh: not inside a SLURM job (SLURM_JOB_NODELIST is unset)." >&2; exit 1; }
slots="${HVD_ELASTIC_SLOTS:-${SLURM_NTASKS_PER_NODE:-1}}"
slots="${slots%%(*}"
timeout_s="${HVD_ELASTIC_PROBE_TIMEOUT:-3}"
for node in $(scontrol show hostnames "$nodes"); do
  if timeout "$timeout_s" ssh -o BatchMode=yes -o ConnectTimeout="$timeout_s" "$node" true >/dev/null 2>&1; then
    echo "$node:$slots"
  fi
done
exit 0
