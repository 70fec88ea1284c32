# Shared settings of the network-namespace test cluster (sourced by the netns scripts).
#
# Knobs (environment):
#   HVD_NETNS_PREFIX  prefix of the namespaces, e.g. hvdt-h1, hvdt-sw (default: hvdt)
#   HVD_NETNS_SUBNET  first three octets of the private /24 the cluster uses (default: 10.213.47)
#   HVD_NETNS_STATE   where keys, configs and PIDs live (default: /tmp/hvd_trainer_netns/<prefix>)
#
# Layout: one "switch" namespace <prefix>-sw holds a bridge; every host <prefix>-hN has a veth
# (eth0 inside the host) plugged into that bridge, address <subnet>.(10+N), hostname hN, and its
# own mount and UTS namespaces (own /etc/hosts, /etc/hostname, /etc/resolv.conf, /run, /dev/shm)
# held by a small holder process. Nothing is added to the machine's own network namespace, and
# the hosts have no default route: their traffic cannot leave the bridge.

HVD_NETNS_PREFIX="${HVD_NETNS_PREFIX:-hvdt}"
HVD_NETNS_SUBNET="${HVD_NETNS_SUBNET:-10.213.47}"
HVD_NETNS_STATE="${HVD_NETNS_STATE:-/tmp/hvd_trainer_netns/$HVD_NETNS_PREFIX}"
NETNS_SWITCH="$HVD_NETNS_PREFIX-sw"

netns_say() { printf '[netns] %s\n' "$*"; }
netns_die() { printf '\n[netns] ERROR: %s\n\n' "$*" >&2; exit 1; }

host_name() { printf 'h%s' "$1"; }                          # host index -> hostname
host_ns() { printf '%s-h%s' "$HVD_NETNS_PREFIX" "$1"; }      # host index -> namespace name
host_addr() { printf '%s.%s' "$HVD_NETNS_SUBNET" "$((10 + $1))"; }

# PID of the process that holds host NAME's mount and UTS namespaces (empty when not running).
holder_pid() {
  local f="$HVD_NETNS_STATE/run/$1.holder.pid" pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then printf '%s' "$pid"; fi
}
