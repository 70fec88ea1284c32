"""Pre-flight checks for a multi-host launch (`horovodrun -H h1:2,h2:2`), run before any rank starts.

Most multi-host failures only show up once a second machine is involved, and Horovod reports them
late and obscurely: a name that does not resolve ends in a Python traceback inside horovodrun, a
wrong --network-interface in a KeyError (or in Gloo aborting on the remote ranks), a machine
whose own name maps to 127.0.1.1 in ssh being refused or ranks that cannot reach each other, and
two machines with the same hostname in a segfault inside OpenMPI's MPI_Comm_split.
`check_hosts` finds these up front and says how to fix each one.

    problems = check_hosts(["h1", "h2"], network_interface="eth0")
    for p in problems: print(p)          # empty list: nothing found

It needs nothing beyond the standard library (psutil, a Horovod dependency, is used when present
to read interface addresses) and never initialises Horovod or MPI.
"""
from __future__ import annotations

import ipaddress
import re
import shlex
import shutil
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Set, Tuple

from hvd_trainer.errors import LaunchError

# horovodrun accepts exactly this form per host (horovod.runner.common.util.hosts).
_HOST_ITEM = re.compile(r"^([\w.-]+):([0-9]+)$")
# Lines the remote probe prints start with this marker, so that anything a login shell prints
# (a banner from ~/.bashrc) cannot be mistaken for an answer.
_MARK = "@@hvd_trainer"
# Interface names as the kernel allows them; anything else is never put into a remote command.
_IFACE_NAME = re.compile(r"^[\w.:@-]{1,15}$")


def parse_host_slots(spec: str) -> List[Tuple[str, int]]:
    """Parse horovodrun's host string, 'h1:2,h2:2' -> [('h1', 2), ('h2', 2)].

    Raises LaunchError with the offending item when the string is not in horovodrun's form.
    """
    if not spec or not spec.strip():
        raise LaunchError(
            "The host list is empty. Give every machine with its number of slots (ranks), "
            "separated by commas, e.g. --hosts h1:2,h2:2."
        )
    result: List[Tuple[str, int]] = []
    seen: Set[str] = set()
    for item in spec.split(","):
        item = item.strip()
        match = _HOST_ITEM.match(item)
        if not match:
            hint = f" (did you mean '{item}:1'?)" if item and ":" not in item else ""
            raise LaunchError(
                f"The host entry {item!r} in {spec!r} is not of the form NAME:SLOTS{hint}. "
                "horovodrun needs every machine with its number of ranks, e.g. h1:2,h2:2, with "
                "no spaces inside an entry."
            )
        name, slots = match.group(1), int(match.group(2))
        if slots < 1:
            raise LaunchError(
                f"The host entry {item!r} asks for {slots} slots; every listed machine needs at "
                "least 1. Leave the machine out of the list instead."
            )
        if name in seen:
            raise LaunchError(
                f"The host {name!r} appears twice in {spec!r}. List each machine once with its "
                f"total number of slots (e.g. {name}:4); horovodrun would otherwise count it as "
                "two machines and give wrong local ranks."
            )
        seen.add(name)
        result.append((name, slots))
    return result


def parse_hosts(spec: str) -> List[str]:
    """Just the host names of 'h1:2,h2:2' (the argument `check_hosts` takes)."""
    return [name for name, _ in parse_host_slots(spec)]


# ---- facts gathered about each host ---------------------------------------------------------


@dataclass
class _HostFacts:
    name: str
    addresses: List[str] = field(default_factory=list)  # what the name resolves to, here
    resolve_error: Optional[str] = None
    is_local: bool = False
    # From ssh (remote hosts only); None when not checked.
    ssh_error: Optional[str] = None
    remote_hostname: Optional[str] = None
    remote_self_addresses: List[str] = field(default_factory=list)
    remote_missing_ifaces: List[str] = field(default_factory=list)


def _resolve(name: str) -> Tuple[List[str], Optional[str]]:
    """The addresses `name` resolves to on this machine, IPv4 first (Horovod uses IPv4)."""
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as e:
        return [], str(e)
    v4 = [i[4][0] for i in infos if i[0] == socket.AF_INET]
    v6 = [i[4][0] for i in infos if i[0] == socket.AF_INET6]
    ordered: List[str] = []
    for a in v4 + v6:
        if a not in ordered:
            ordered.append(a)
    return ordered, None


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def _local_interfaces() -> Dict[str, List[str]]:
    """Interface name -> its IPv4/IPv6 addresses on this machine (addresses empty without psutil)."""
    names = [name for _, name in socket.if_nameindex()]
    result: Dict[str, List[str]] = {name: [] for name in names}
    try:
        import psutil
    except ImportError:
        return result
    for name, addrs in psutil.net_if_addrs().items():
        result.setdefault(name, [])
        for a in addrs:
            if a.family in (socket.AF_INET, socket.AF_INET6):
                result[name].append(a.address.split("%")[0])
    return result


def _split_interfaces(network_interface: Optional[str]) -> List[str]:
    # horovodrun's --network-interfaces takes a comma-separated list; accept that here too.
    if not network_interface:
        return []
    return [i.strip() for i in network_interface.split(",") if i.strip()]


def _remote_probe_command(interfaces: Sequence[str]) -> str:
    """A POSIX shell snippet run over ssh: the remote hostname, what that name resolves to
    there, and which of the requested interfaces are missing there."""
    parts = [
        f'h=$(hostname); echo "{_MARK} hostname $h"',
        f'for a in $(getent ahosts "$h" 2>/dev/null | cut -d" " -f1 | sort -u); do echo "{_MARK} self $a"; done',
    ]
    for iface in interfaces:
        if _IFACE_NAME.match(iface):
            parts.append(f'[ -e /sys/class/net/{shlex.quote(iface)} ] || echo "{_MARK} noiface {iface}"')
    parts.append(f'echo "{_MARK} done"')
    return "; ".join(parts)


def _ssh_probe(facts: _HostFacts, interfaces: Sequence[str], ssh: str, port: Optional[int],
               identity_file: Optional[str], timeout: float) -> None:
    # The same options horovodrun uses for its own ssh (no password prompt, no host-key prompt),
    # plus BatchMode so nothing ever waits for a person, and a short connect timeout.
    cmd = [ssh, "-o", "PasswordAuthentication=no", "-o", "StrictHostKeyChecking=no",
           "-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(1, int(timeout))}"]
    if port:
        cmd += ["-p", str(port)]
    if identity_file:
        cmd += ["-i", identity_file]
    cmd += [facts.name, _remote_probe_command(interfaces)]
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=timeout + 10)
    except subprocess.TimeoutExpired:
        facts.ssh_error = f"no answer within {timeout + 10:.0f} s"
        return
    except OSError as e:
        facts.ssh_error = str(e)
        return
    lines = [line.split(None, 2)[1:] for line in proc.stdout.splitlines() if line.startswith(_MARK + " ")]
    if proc.returncode != 0 or ["done"] not in lines:
        said = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        facts.ssh_error = said
        return
    for item in lines:
        if len(item) == 2 and item[0] == "hostname":
            facts.remote_hostname = item[1]
        elif len(item) == 2 and item[0] == "self":
            facts.remote_self_addresses.append(item[1])
        elif len(item) == 2 and item[0] == "noiface":
            facts.remote_missing_ifaces.append(item[1])


# ---- the check ------------------------------------------------------------------------------


def check_hosts(
    hosts: List[str],
    network_interface: Optional[str] = None,
    *,
    ssh: Optional[bool] = None,
    ssh_port: Optional[int] = None,
    ssh_identity_file: Optional[str] = None,
    ssh_timeout: float = 5.0,
) -> List[str]:
    """Check that `hosts` can run one Horovod job from this machine. Returns fix-it sentences
    (an empty list means nothing was found).

    Checks, in order: every name resolves here; with more than one host, no name resolves to a
    loopback address and no two names are the same machine; `network_interface` (one name or a
    comma-separated list, as horovodrun takes) exists here with an address; and, when ssh is
    available (or `ssh=True`), every remote host accepts a password-less ssh login in BatchMode,
    has the interface too, does not resolve its own name to loopback, and has a hostname no
    other host has. Local hosts (an address of this machine) are not ssh'ed, as horovodrun
    does not ssh to them either.
    """
    names = list(hosts)
    if not names:
        return ["No hosts were given. List the machines with their slots, e.g. --hosts h1:2,h2:2."]
    multi = len(names) > 1
    interfaces = _split_interfaces(network_interface)
    local_ifaces = _local_interfaces()
    local_addresses = {a for addrs in local_ifaces.values() for a in addrs}

    facts = [_HostFacts(name) for name in names]
    problems = _check_names(facts, multi, local_addresses)
    if multi:
        problems += _check_one_machine_listed_twice(facts)
    problems += _check_local_interfaces(interfaces, local_ifaces, multi)
    use_ssh = ssh if ssh is not None else shutil.which("ssh") is not None
    remote = [f for f in facts if f.resolve_error is None and not f.is_local]
    if use_ssh and remote:
        problems += _check_ssh(remote, interfaces, ssh_port, ssh_identity_file, ssh_timeout)
    problems += _check_unique_hostnames(facts)
    return problems


def _check_names(facts: List[_HostFacts], multi: bool, local_addresses: Set[str]) -> List[str]:
    """1. Names resolve (filling in each host's addresses), and with several hosts not to loopback."""
    problems: List[str] = []
    for f in facts:
        if not f.name or f.name.startswith("-") or any(c.isspace() for c in f.name):
            # Never hand ssh something it would read as an option.
            f.resolve_error = "not a host name"
            problems.append(f"{f.name!r} is not a host name; list machines as NAME:SLOTS, e.g. h1:2,h2:2.")
            continue
        f.addresses, f.resolve_error = _resolve(f.name)
        if f.resolve_error is not None:
            problems.append(
                f"The host name {f.name!r} does not resolve on this machine ({f.resolve_error}). "
                f"Check its spelling, add a line '<address> {f.name}' to /etc/hosts on every "
                "machine of the job (or register it in DNS), or list the host by its IP address."
            )
            continue
        loopback = [a for a in f.addresses if _is_loopback(a)]
        f.is_local = bool(set(f.addresses) & local_addresses) or bool(loopback)
        if multi and loopback:
            problems.append(_loopback_problem(f.name, loopback[0]))
    return problems


def _loopback_problem(name: str, loopback: str) -> str:
    if name == "localhost" or _is_loopback(name):
        return (
            f"The host list names {name!r} next to other machines. The other machines "
            "cannot reach this one through a loopback address: use this machine's "
            f"hostname ({socket.gethostname()}) or its network address instead."
        )
    return (
        f"The host name {name!r} resolves to the loopback address {loopback} on "
        "this machine, but the other machines of the job must reach it over the "
        "network. Debian and Ubuntu map a machine's own name to 127.0.1.1 in /etc/hosts "
        "by default, which breaks jobs across machines: horovodrun then ssh'es to a "
        "loopback address, and Gloo, which binds to whatever the machine's name "
        "resolves to when no interface is named, listens where no other rank can "
        "connect, so the job hangs in rendezvous or crashes inside Gloo. Map the name "
        f"to the machine's routable address in /etc/hosts (e.g. '10.0.0.5 {name}'), "
        "or list the host by that address."
    )


def _check_one_machine_listed_twice(facts: List[_HostFacts]) -> List[str]:
    """2. Two names for one machine (only meaningful with routable addresses)."""
    by_address: Dict[str, List[str]] = {}
    for f in facts:
        for a in f.addresses:
            if not _is_loopback(a):
                by_address.setdefault(a, []).append(f.name)
    problems: List[str] = []
    reported: Set[Tuple[str, ...]] = set()
    for address, owners in by_address.items():
        key = tuple(sorted(set(owners)))
        if len(key) > 1 and key not in reported:
            reported.add(key)
            problems.append(
                f"The hosts {', '.join(key)} all resolve to {address}, so they are one machine "
                "listed several times. horovodrun would count them as separate machines and "
                "give wrong local ranks; list the machine once with the sum of its slots."
            )
    return problems


def _check_local_interfaces(interfaces: List[str], local_ifaces: Dict[str, List[str]], multi: bool) -> List[str]:
    """3. The network interface exists here, has an address, and is not loopback."""
    problems: List[str] = []
    for iface in interfaces:
        if iface not in local_ifaces:
            available = ", ".join(sorted(local_ifaces)) or "none found"
            problems.append(
                f"The network interface {iface!r} does not exist on this machine (it has: "
                f"{available}). Pass the interface that connects the hosts, e.g. "
                "--network-interface eth0, or leave the option out and let horovodrun find an "
                "interface all hosts share."
            )
        elif multi and (iface == "lo" or (local_ifaces[iface] and all(_is_loopback(a) for a in local_ifaces[iface]))):
            problems.append(
                f"The network interface {iface!r} is the loopback interface, which other machines "
                "cannot reach. Name the interface that connects the hosts (e.g. eth0)."
            )
        elif not local_ifaces[iface] and _has_psutil():
            problems.append(
                f"The network interface {iface!r} exists on this machine but has no IP address, "
                "so no rank can listen on it. Bring it up with an address or name another one."
            )
    return problems


def _check_ssh(remote: List[_HostFacts], interfaces: List[str], port: Optional[int],
               identity_file: Optional[str], timeout: float) -> List[str]:
    """4. ssh to the remote hosts (those that resolved and are not this machine), all at once."""
    ssh_bin = shutil.which("ssh")
    if ssh_bin is None:
        return [
            "ssh is not installed on this machine, and horovodrun starts the ranks on the "
            "other hosts through ssh. Install the OpenSSH client (apt-get install openssh-client)."
        ]
    with ThreadPoolExecutor(max_workers=min(16, len(remote))) as pool:
        list(pool.map(lambda f: _ssh_probe(f, interfaces, ssh_bin, port, identity_file, timeout), remote))
    return _ssh_problems(remote, port, identity_file)


def _check_unique_hostnames(facts: List[_HostFacts]) -> List[str]:
    """5. Every machine needs its own hostname (OpenMPI crashes otherwise).

    Entries that are this machine count once: listing it twice is reported by check 2.
    """
    hostnames: Dict[str, List[str]] = {}
    local_entries = [f.name for f in facts if f.is_local and f.resolve_error is None]
    if local_entries:
        hostnames[socket.gethostname()] = [local_entries[0]]
    for f in facts:
        if not f.is_local and f.remote_hostname:
            hostnames.setdefault(f.remote_hostname, []).append(f.name)
    problems: List[str] = []
    for own, listed in hostnames.items():
        if len(set(listed)) > 1:
            problems.append(
                f"The hosts {', '.join(listed)} all call themselves {own!r}. Every machine needs "
                "its own hostname: with two machines of one name, OpenMPI crashes (a segfault in "
                "MPI_Comm_split) and Horovod mixes up their local ranks. Give each machine a "
                "unique hostname (hostnamectl set-hostname, or --hostname for containers)."
            )
    return problems


def _has_psutil() -> bool:
    try:
        import psutil  # noqa: F401
    except ImportError:
        return False
    return True


def _ssh_problems(remote: List[_HostFacts], port: Optional[int], identity_file: Optional[str]) -> List[str]:
    problems = []
    for f in remote:
        if f.ssh_error is not None:
            how = "ssh" + (f" -p {port}" if port else "") + (f" -i {identity_file}" if identity_file else "")
            problems.append(
                f"Cannot log in to {f.name!r} with ssh without a password ({how} {f.name} said: "
                f"{f.ssh_error}). horovodrun starts the ranks on other machines through ssh, as "
                "the same user, non-interactively. Check that sshd runs there and that this user's "
                f"key is accepted ('ssh-copy-id {f.name}', then '{how} -o BatchMode=yes {f.name} "
                "true' must succeed), or pass --ssh-port / --ssh-identity-file to horovodrun."
            )
            continue
        if f.remote_missing_ifaces:
            problems.append(
                f"The network interface(s) {', '.join(f.remote_missing_ifaces)} do not exist on "
                f"{f.name!r}; every host must have the interface given to horovodrun (Gloo "
                "aborts on a host without it). Name an interface all hosts share, or leave the "
                "option out and let horovodrun find one."
            )
        if f.remote_self_addresses and all(_is_loopback(a) for a in f.remote_self_addresses):
            problems.append(
                f"On {f.name!r} the machine's own name ({f.remote_hostname}) resolves to "
                f"{f.remote_self_addresses[0]}, a loopback address (the Debian/Ubuntu default "
                f"'127.0.1.1 {f.remote_hostname}' in /etc/hosts). Processes there that bind to "
                "their hostname's address (Gloo without a named interface, OpenMPI's out-of-band "
                "channel) cannot be reached by the other machines. Map the name to the machine's "
                "routable address in /etc/hosts on that machine."
            )
    return problems
