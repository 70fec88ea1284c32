#!/usr/bin/env bash
# Host discovery for elastic training from a static file: edit the file to add or remove hosts.
#   horovodrun -np 3 --min-np 2 --max-np 4 --host-discovery-script scripts/elastic/discover_hosts_file.sh ...
# The file (HVD_ELASTIC_HOSTS, default ./elastic_hosts.txt) holds one "host:slots" per line ("host" alone
# means one slot); blank lines and lines starting with # are ignored. horovodrun runs this script every
# second or so: a host that disappears from the file is let go, a new one joins the next rendezvous.
set -eu
file="${HVD_ELASTIC_HOSTS:-./elastic_hosts.txt}"
[ -r "$file" ] || { echo "discover_hosts_file.sh: cannot read the hosts file $file (set HVD_ELASTIC_HOSTS)." >&2; exit 1; }
while IFS= read -r line || [ -n "$line" ]; do
  line="${line%%#*}"
  line="$(echo "$line" | tr -d '[:space:]')"
  [ -n "$line" ] || continue
  case "$line" in *:*) echo "$line" ;; *) echo "$line:1" ;; esac
done < "$file"
