#!/usr/bin/env bash
# Take the netns test cluster down: end every process inside its hosts (sshd, ranks, launchers
# started there), delete its namespaces and its state directory. Idempotent; touches only the
# namespaces that netns_cluster_up.sh created (listed in its state directory, or named
# <prefix>-sw / <prefix>-hN when the state is gone).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/netns/common.sh"
[ "$(id -u)" -eq 0 ] || netns_die "Taking the netns cluster down needs root, like starting it."

S="$HVD_NETNS_STATE"
namespaces=""
if [ -f "$S/run/namespaces" ]; then namespaces=$(grep -v '^$' "$S/run/namespaces" || true); fi
namespaces="$namespaces $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$HVD_NETNS_PREFIX-(sw|h[0-9]+)\$" || true)"
namespaces=$(printf '%s\n' $namespaces | sort -u)

# PIDs recorded by the up script (holders keep a namespace alive even after 'ip netns del').
pids=""
if [ -d "$S/run" ]; then
  for f in "$S"/run/*.pid; do
    [ -f "$f" ] || continue
    pids="$pids $(cat "$f")"
  done
fi
for ns in $namespaces; do
  pids="$pids $(ip netns pids "$ns" 2>/dev/null || true)"
done

alive() { local p out=""; for p in $1; do kill -0 "$p" 2>/dev/null && out="$out $p"; done; printf '%s' "$out"; }
pids=$(alive "$pids")
if [ -n "$pids" ]; then
  kill -TERM $pids 2>/dev/null || true
  for _ in $(seq 1 20); do
    pids=$(alive "$pids"); [ -z "$pids" ] && break; sleep 0.1
  done
  [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
fi
# Anything started inside the hosts after the first sweep (e.g. by a dying launcher).
for ns in $namespaces; do
  late=$(ip netns pids "$ns" 2>/dev/null || true)
  [ -z "$late" ] || kill -KILL $late 2>/dev/null || true
done

for ns in $namespaces; do
  ip netns del "$ns" 2>/dev/null || true
done
# Remove the state directory only when it is one the up script made.
if [ -n "$S" ] && [ "$S" != / ] && { [ -d "$S/ssh" ] || [ -d "$S/run" ]; }; then rm -rf "$S"; fi
netns_say "Cluster '$HVD_NETNS_PREFIX' is down."
