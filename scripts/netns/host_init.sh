#!/usr/bin/env bash
# Runs as the first process of one cluster host, already inside the host's network namespace
# and inside fresh mount and UTS namespaces (see netns_cluster_up.sh). It gives the host its own
# identity, then stays alive as the holder of those namespaces: sshd and every command "on the
# host" enter them through this process's PID.
set -euo pipefail
STATE="$1"
NAME="$2"

hostname "$NAME"
# Per-host files over the machine's own. The hosts file maps every cluster name to its routable
# address (never 127.0.1.1: Gloo and the rendezvous bind to what the hostname resolves to).
mount --bind "$STATE/etc/hosts" /etc/hosts
mount --bind "$STATE/hosts/$NAME/hostname" /etc/hostname
# Name servers point at the host itself, so a lookup that /etc/hosts cannot answer fails here
# at once instead of leaving the namespace (which has no route out anyway).
if [ ! -L /etc/resolv.conf ]; then mount --bind "$STATE/etc/resolv.conf" /etc/resolv.conf; fi
mount -t tmpfs -o mode=0755,size=64m "hvd-$NAME-run" /run
mkdir -p /run/sshd && chmod 0755 /run/sshd
mount -t tmpfs -o mode=1777,size=2g "hvd-$NAME-shm" /dev/shm

echo ready > "$STATE/run/$NAME.ready"
# Hold the namespaces open; the down script ends this process (and everything in the host).
exec sleep infinity
