#!/usr/bin/env bash
# Run a command on one host of the netns test cluster, as if logged in there:
#   scripts/netns/on_host.sh h1 horovodrun -np 4 -H h1:2,h2:2 python -m hvd_trainer doctor
# The command enters the host's network, mount and UTS namespaces, keeps the current directory,
# and finds the cluster's ssh wrapper first on PATH (cluster key, cluster known_hosts, never
# ~/.ssh). HOME is the cluster's private home, so horovodrun's cache stays out of ~/.horovod.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/common.sh"

[ $# -ge 2 ] || netns_die "usage: $0 HOST COMMAND [ARGS...]"
name="$1"; shift
pid=$(holder_pid "$name")
[ -n "$pid" ] || netns_die "Host '$name' of the netns cluster '$HVD_NETNS_PREFIX' is not running. Start the cluster with scripts/netns_cluster_up.sh (state: $HVD_NETNS_STATE)."
exec nsenter --target "$pid" --net --mount --uts --wd="$PWD" -- \
  env PATH="$HVD_NETNS_STATE/bin:$PATH" HOME="$HVD_NETNS_STATE/home" HVD_NETNS_HOST="$name" "$@"
