#!/usr/bin/env bash
# Make the base image the Dockerfile builds on when Docker Hub is out of reach: Debian 12
# (bookworm) from Debian's own mirror with debootstrap, with the runtime packages hvd_trainer's
# image needs already installed (the image build itself may then run without any network),
# imported into the engine as $HVD_BASE_IMAGE (default hvd-trainer-base:bookworm).
#
#   scripts/docker_engine_up.sh && export DOCKER_HOST=unix:///tmp/hvd_trainer_docker/docker.sock
#   scripts/docker_base_image.sh
#   docker build --build-arg BASE_IMAGE=hvd-trainer-base:bookworm ...
#
# The root file system is cached as a tarball under ~/.cache/hvd_trainer/docker, so a fresh
# engine imports it in seconds; debootstrap (about a minute) runs only the first time.
# Knobs: HVD_BASE_IMAGE, HVD_DEBIAN_MIRROR (default http://deb.debian.org/debian), HVD_DOCKER_CACHE.
set -euo pipefail

IMAGE="${HVD_BASE_IMAGE:-hvd-trainer-base:bookworm}"
MIRROR="${HVD_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CACHE="${HVD_DOCKER_CACHE:-$HOME/.cache/hvd_trainer/docker}"
SUITE=bookworm
# What the image needs at run time: Python (with venv), OpenMPI, sshd/ssh, ps for MPI's cleanup.
PACKAGES="python3,python3-venv,openmpi-bin,openssh-server,openssh-client,procps,ca-certificates"

say() { printf '[base-image] %s\n' "$*"; }
die() { printf '\n[base-image] ERROR: %s\n\n' "$*" >&2; exit 1; }

command -v docker >/dev/null 2>&1 || die "The docker client is not installed (apt-get install docker.io)."
docker info >/dev/null 2>&1 || die "No Docker engine answers at ${DOCKER_HOST:-the default socket}. Start one with scripts/docker_engine_up.sh and export the DOCKER_HOST it prints."

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  say "$IMAGE is already in the engine."
  exit 0
fi

key=$(printf '%s %s %s' "$SUITE" "$PACKAGES" "$MIRROR" | sha256sum | cut -c1-12)
TARBALL="$CACHE/base-$SUITE-$key.tar.gz"
mkdir -p "$CACHE"
if [ ! -s "$TARBALL" ]; then
  [ "$(id -u)" -eq 0 ] || die "debootstrap needs root to build the base image; run this script as root once (the result is cached in $CACHE)."
  if ! command -v debootstrap >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || die "debootstrap is missing and this is not Debian/Ubuntu; install debootstrap, or pull debian:bookworm-slim and build with --build-arg BASE_IMAGE=debian:bookworm-slim."
    say "Installing debootstrap."
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends debootstrap
  fi
  root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  cleanup() {
    # debootstrap mounts /proc and /sys in the chroot; never delete through a mount left behind.
    for m in $(awk -v r="$root" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r); do umount -l "$m" || true; done
    rm -rf --one-file-system "$root"
  }
  trap cleanup EXIT
  # Keep package scripts from starting services (sshd) inside the chroot while it is built.
  mkdir -p "$root/usr/sbin"
  printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
  chmod +x "$root/usr/sbin/policy-rc.d"
  say "Building a Debian $SUITE root file system from $MIRROR (about a minute, once)."
  start=$(date +%s)
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" > "$CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $CACHE/debootstrap.log). Check that $MIRROR is reachable."; }
  rm -f "$root/usr/sbin/policy-rc.d"
  # Host keys belong to each container (made at its first start), never to the image.
  rm -f "$root"/etc/ssh/ssh_host_*
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb "$root"/tmp/* "$root"/var/log/*.log
  : > "$root/etc/hostname"
  tar -C "$root" --numeric-owner -czf "$TARBALL.tmp" .
  mv "$TARBALL.tmp" "$TARBALL"
  say "Root file system cached as $TARBALL ($(du -h "$TARBALL" | cut -f1), $(( $(date +%s) - start )) s)."
fi

say "Importing $TARBALL as $IMAGE."
docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  "$TARBALL" "$IMAGE" >/dev/null
say "$IMAGE is ready."
