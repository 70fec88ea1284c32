#!/usr/bin/env bash
# Start a test cluster of N "hosts" on this one machine, for multi-host Horovod runs:
#   scripts/netns_cluster_up.sh [N]            (default N=2; hosts h1..hN)
#   scripts/netns/on_host.sh h1 horovodrun -np 4 -H h1:2,h2:2 python -m hvd_trainer doctor
#   scripts/netns_cluster_down.sh
#
# Each host is a network namespace (veth on a private bridge, address <subnet>.(10+i)/24, no
# route out) with its own mount and UTS namespaces: its own hostname, /etc/hosts that maps every
# host name to its routable address, /etc/resolv.conf pointing at 127.0.0.1, /run and /dev/shm.
# Every host runs an sshd that accepts only a key generated for this cluster; an ssh wrapper
# (first on PATH inside the hosts) uses that key and the cluster's own ssh_config and
# known_hosts, never ~/.ssh. The file system is shared, as on a cluster with NFS.
#
# Idempotent: when a cluster of the same size is already up it only reports it; a broken or
# differently sized one is taken down first. Needs root, iproute2, util-linux (unshare, nsenter)
# and openssh-server (installed from apt when missing and this is Debian/Ubuntu).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/netns/common.sh"

N="${1:-${HVD_NETNS_NUM_HOSTS:-2}}"
case "$N" in ''|*[!0-9]*) netns_die "The number of hosts must be a whole number from 1 to 200, not '$N'." ;; esac
[ "$N" -ge 1 ] && [ "$N" -le 200 ] || netns_die "The number of hosts must be from 1 to 200, not $N."
START_NS=$(date +%s%N)

# --- 0. Requirements ----------------------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || netns_die "The netns cluster needs root (it creates network, mount and UTS namespaces). Run it with sudo, or skip the multi-host tests."
for tool in ip unshare nsenter ssh-keygen; do
  command -v "$tool" >/dev/null 2>&1 || netns_die "'$tool' is missing; install iproute2, util-linux and openssh-client."
done
SSHD=/usr/sbin/sshd
if [ ! -x "$SSHD" ]; then
  command -v apt-get >/dev/null 2>&1 || netns_die "sshd is not installed and this is not a Debian/Ubuntu machine; install openssh-server and run this again."
  netns_say "Installing openssh-server (sshd) for the cluster hosts."
  # Keep Debian from starting (and enabling) its own sshd on the machine while installing: the
  # cluster runs private sshd's inside its namespaces only.
  made_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends openssh-server; then
    apt-get -o DPkg::Lock::Timeout=600 update -q
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends openssh-server
  fi
  [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
  [ -x "$SSHD" ] || netns_die "openssh-server did not install; install it by hand and run this again."
fi
if ! ip netns add "$HVD_NETNS_PREFIX-probe$$" 2>/dev/null; then
  netns_die "This machine cannot create network namespaces ('ip netns add' failed); the netns cluster cannot run here (a container without CAP_SYS_ADMIN?)."
fi
ip netns del "$HVD_NETNS_PREFIX-probe$$"

# --- 1. Already up? -----------------------------------------------------------------------------
cluster_is_up() {
  [ -f "$HVD_NETNS_STATE/run/num_hosts" ] && [ "$(cat "$HVD_NETNS_STATE/run/num_hosts")" = "$N" ] || return 1
  local i name
  for i in $(seq 1 "$N"); do
    name=$(host_name "$i")
    [ -n "$(holder_pid "$name")" ] || return 1
    [ -f "$HVD_NETNS_STATE/run/$name.sshd.pid" ] && kill -0 "$(cat "$HVD_NETNS_STATE/run/$name.sshd.pid")" 2>/dev/null || return 1
  done
}
if cluster_is_up; then
  netns_say "Cluster '$HVD_NETNS_PREFIX' with $N host(s) is already up (state: $HVD_NETNS_STATE)."
  exit 0
fi
if [ -d "$HVD_NETNS_STATE" ] || ip netns list 2>/dev/null | grep -q "^$HVD_NETNS_PREFIX-"; then
  "$HERE/netns_cluster_down.sh" >/dev/null
fi

# --- 2. Keys and configuration files ----------------------------------------------------------
S="$HVD_NETNS_STATE"
mkdir -p "$S"/{ssh,etc,bin,run,logs,home}
chmod 700 "$S" "$S/ssh" "$S/home"
ssh-keygen -q -t ed25519 -N '' -C "hvd_trainer netns cluster $HVD_NETNS_PREFIX" -f "$S/ssh/id_ed25519"
ssh-keygen -q -t ed25519 -N '' -C "hvd_trainer netns host key" -f "$S/ssh/host_ed25519_key"
cp "$S/ssh/id_ed25519.pub" "$S/ssh/authorized_keys"
chmod 600 "$S/ssh/id_ed25519" "$S/ssh/host_ed25519_key" "$S/ssh/authorized_keys"

{
  echo "127.0.0.1 localhost"
  echo "::1 localhost ip6-localhost ip6-loopback"
  for i in $(seq 1 "$N"); do echo "$(host_addr "$i") $(host_name "$i")"; done
} > "$S/etc/hosts"
echo "nameserver 127.0.0.1" > "$S/etc/resolv.conf"
: > "$S/ssh/known_hosts"
for i in $(seq 1 "$N"); do
  name=$(host_name "$i")
  mkdir -p "$S/hosts/$name"
  echo "$name" > "$S/hosts/$name/hostname"
  echo "$name,$(host_addr "$i") $(cut -d' ' -f1,2 "$S/ssh/host_ed25519_key.pub")" >> "$S/ssh/known_hosts"
done

cat > "$S/ssh/sshd_config" <<CFG
# sshd of the hvd_trainer netns test cluster: key login for root with the cluster key only.
Port 22
HostKey $S/ssh/host_ed25519_key
AuthorizedKeysFile $S/ssh/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
PrintLastLog no
# horovodrun opens one ssh session per remote slot at once.
MaxStartups 200
MaxSessions 200
# Sessions get the cluster's private home (no ~/.bashrc, no ~/.horovod cache of the machine).
SetEnv HOME=$S/home
LogLevel ERROR
CFG

cat > "$S/ssh/ssh_config" <<CFG
# ssh client settings of the hvd_trainer netns test cluster (used through $S/bin/ssh).
Host *
  User root
  Port 22
  IdentityFile $S/ssh/id_ed25519
  IdentitiesOnly yes
  IdentityAgent none
  UserKnownHostsFile $S/ssh/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  BatchMode yes
  ConnectTimeout 5
  ServerAliveInterval 5
  ServerAliveCountMax 3
  LogLevel ERROR
CFG

cat > "$S/bin/ssh" <<WRAP
#!/bin/sh
# ssh for the hvd_trainer netns cluster: the cluster's config, key and known_hosts only.
exec /usr/bin/ssh -F "$S/ssh/ssh_config" "\$@"
WRAP
chmod +x "$S/bin/ssh"

# --- 3. Network: a bridge in a switch namespace, one veth per host ----------------------------
# The down script removes exactly the namespaces listed here.
echo "$NETNS_SWITCH" > "$S/run/namespaces"
for i in $(seq 1 "$N"); do host_ns "$i" >> "$S/run/namespaces"; echo >> "$S/run/namespaces"; done
ip netns add "$NETNS_SWITCH"
ip -n "$NETNS_SWITCH" link set lo up
ip -n "$NETNS_SWITCH" link add br0 type bridge
ip -n "$NETNS_SWITCH" link set br0 up
for i in $(seq 1 "$N"); do
  ns=$(host_ns "$i"); name=$(host_name "$i")
  ip netns add "$ns"
  ip -n "$NETNS_SWITCH" link add "$name" type veth peer name eth0 netns "$ns"
  ip -n "$NETNS_SWITCH" link set "$name" master br0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$(host_addr "$i")/24" dev eth0
  ip -n "$ns" link set eth0 up
done
echo "$N" > "$S/run/num_hosts"

# --- 4. Hosts: namespace holders, then sshd -----------------------------------------------------
for i in $(seq 1 "$N"); do
  ns=$(host_ns "$i"); name=$(host_name "$i")
  # setsid: the holder must not die with the terminal or the test that started the cluster.
  setsid ip netns exec "$ns" unshare --mount --uts --propagation private -- \
    "$HERE/netns/host_init.sh" "$S" "$name" </dev/null >>"$S/logs/$name.init.log" 2>&1 &
  echo $! > "$S/run/$name.holder.pid"
done
for i in $(seq 1 "$N"); do
  name=$(host_name "$i")
  for _ in $(seq 1 100); do [ -f "$S/run/$name.ready" ] && break; sleep 0.05; done
  [ -f "$S/run/$name.ready" ] || netns_die "Host $name did not come up; see $S/logs/$name.init.log."
  pid=$(holder_pid "$name")
  [ -n "$pid" ] && [ "$(readlink "/proc/$pid/ns/uts")" != "$(readlink /proc/self/ns/uts)" ] \
    || netns_die "The holder of host $name is not in its own namespaces; see $S/logs/$name.init.log."
  nsenter --target "$pid" --net --mount --uts -- "$SSHD" -f "$S/ssh/sshd_config" \
    -o "ListenAddress=$(host_addr "$i")" -o "PidFile=$S/run/$name.sshd.pid" -E "$S/logs/$name.sshd.log"
done

# --- 5. Wait until every sshd answers (from h1, with the cluster key) --------------------------
for i in $(seq 1 "$N"); do
  name=$(host_name "$i")
  ok=""
  for _ in $(seq 1 50); do
    if "$HERE/netns/on_host.sh" h1 ssh -o ConnectTimeout=2 "$name" true </dev/null >/dev/null 2>&1; then ok=1; break; fi
    sleep 0.1
  done
  [ -n "$ok" ] || netns_die "sshd on $name does not accept the cluster key; see $S/logs/$name.sshd.log."
done

hosts_spec=$(for i in $(seq 1 "$N"); do printf '%s:2,' "$(host_name "$i")"; done); hosts_spec=${hosts_spec%,}
elapsed_ms=$(( ($(date +%s%N) - START_NS) / 1000000 ))
netns_say "Cluster '$HVD_NETNS_PREFIX' is up in ${elapsed_ms} ms: $N host(s) $(for i in $(seq 1 "$N"); do printf '%s=%s ' "$(host_name "$i")" "$(host_addr "$i")"; done)(state: $S)."
netns_say "Try: scripts/netns/on_host.sh h1 $(cd "$HERE/.." && pwd)/.venv/bin/horovodrun -np $((2 * N)) -H $hosts_spec --disable-cache python -m hvd_trainer doctor"
