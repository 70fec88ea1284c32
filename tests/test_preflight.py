"""hvd_trainer.preflight: the host-list parser and check_hosts, with name resolution, local
interfaces and ssh replaced by fakes (no lookup or connection leaves the test).

The same checks run for real across two machines in tests/test_multihost.py.
"""
import json
import os
import socket
import stat
import sys

import pytest

from hvd_trainer import preflight
from hvd_trainer.errors import LaunchError
from hvd_trainer.preflight import check_hosts, parse_host_slots, parse_hosts

# What each name resolves to "on this machine" (the launcher, hostname 'a', address 10.0.0.1).
DNS = {
    "a": ["10.0.0.1"],
    "b": ["10.0.0.2"],
    "c": ["10.0.0.3"],
    "b-alias": ["10.0.0.2"],
    "deb": ["127.0.1.1"],
    "localhost": ["127.0.0.1"],
}
LOCAL_INTERFACES = {"lo": ["127.0.0.1", "::1"], "eth0": ["10.0.0.1"], "ib0": []}

# A stand-in for ssh: answers like the remote probe would, from FAKE_SSH_SPEC (host -> answer),
# and logs its arguments to FAKE_SSH_LOG.
FAKE_SSH = r'''
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_SSH_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
host, command = args[-2], args[-1]
spec = json.loads(os.environ["FAKE_SSH_SPEC"]).get(host, {"hostname": host})
if spec.get("refuse"):
    sys.stderr.write("ssh: connect to host %s port 22: Connection refused\n" % host)
    sys.exit(255)
print("Welcome! (a banner from a login script)")
print("@@hvd_trainer hostname " + spec["hostname"])
for a in spec.get("self", []):
    print("@@hvd_trainer self " + a)
for iface in spec.get("missing", []):
    if "/sys/class/net/" + iface in command:
        print("@@hvd_trainer noiface " + iface)
print("@@hvd_trainer done")
'''


@pytest.fixture
def fake_network(monkeypatch):
    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        if host not in DNS:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 0)) for a in DNS[host]]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "gethostname", lambda: "a")
    monkeypatch.setattr(preflight, "_local_interfaces", lambda: {k: list(v) for k, v in LOCAL_INTERFACES.items()})
    monkeypatch.setattr(preflight, "_has_psutil", lambda: True)


@pytest.fixture
def fake_ssh(tmp_path, monkeypatch, fake_network):
    """Returns set(spec) -> None and calls() -> list of argument lists ssh was called with."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ssh = bin_dir / "ssh"
    ssh.write_text(f"#!{sys.executable}\n" + FAKE_SSH)
    ssh.chmod(ssh.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "ssh.log"
    log.write_text("")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_SSH_LOG", str(log))
    monkeypatch.setenv("FAKE_SSH_SPEC", "{}")

    class Fake:
        @staticmethod
        def set(spec):
            monkeypatch.setenv("FAKE_SSH_SPEC", json.dumps(spec))

        @staticmethod
        def calls():
            return [json.loads(line) for line in log.read_text().splitlines()]

    return Fake


# ---- parse_host_slots -----------------------------------------------------------------------


@pytest.mark.parametrize("spec, expected", [
    ("h1:2,h2:2", [("h1", 2), ("h2", 2)]),
    (" node-1.cluster:4 , 10.0.0.7:1 ", [("node-1.cluster", 4), ("10.0.0.7", 1)]),
    ("localhost:8", [("localhost", 8)]),
])
def test_parse_host_slots_reads_horovodruns_host_string(spec, expected):
    assert parse_host_slots(spec) == expected
    assert parse_hosts(spec) == [name for name, _ in expected]


@pytest.mark.parametrize("spec, words", [
    ("", "empty"),
    ("h1,h2", "did you mean 'h1:1'"),
    ("h1:two", "NAME:SLOTS"),
    ("h1:0", "at least 1"),
    ("h1:2,h1:2", "appears twice"),
    ("h1:2;h2:2", "NAME:SLOTS"),
])
def test_parse_host_slots_refuses_bad_host_strings_naming_the_entry(spec, words):
    with pytest.raises(LaunchError) as e:
        parse_host_slots(spec)
    assert words in str(e.value)


# ---- check_hosts: names and addresses -------------------------------------------------------


def test_a_single_local_host_passes(fake_network):
    assert check_hosts(["localhost"], None, ssh=False) == []
    assert check_hosts(["a"], "eth0", ssh=False) == []


def test_something_ssh_would_read_as_an_option_is_not_a_host(fake_ssh):
    problems = check_hosts(["a", "-oProxyCommand"], None)
    assert len(problems) == 1 and "is not a host name" in problems[0]
    assert fake_ssh.calls() == []


def test_no_hosts_is_a_problem(fake_network):
    assert "No hosts" in check_hosts([], None, ssh=False)[0]


def test_a_name_that_does_not_resolve_is_named_with_the_fix(fake_network):
    problems = check_hosts(["a", "nosuch"], None, ssh=False)
    assert len(problems) == 1
    assert "'nosuch' does not resolve" in problems[0] and "/etc/hosts" in problems[0]


def test_a_name_on_127_0_1_1_with_several_hosts_explains_the_debian_default_and_gloo(fake_network):
    problems = check_hosts(["deb", "b"], None, ssh=False)
    assert len(problems) == 1
    text = problems[0]
    assert "127.0.1.1" in text and "Gloo" in text and "/etc/hosts" in text and "routable address" in text


def test_a_name_on_127_0_1_1_is_fine_for_a_single_host_job(fake_network):
    assert check_hosts(["deb"], None, ssh=False) == []


def test_localhost_next_to_other_machines_is_a_problem(fake_network):
    problems = check_hosts(["localhost", "b"], None, ssh=False)
    assert len(problems) == 1 and "'localhost' next to other machines" in problems[0]
    assert "(a)" in problems[0], "the fix names this machine's hostname"


def test_two_names_for_one_machine_are_a_problem(fake_network):
    problems = check_hosts(["a", "b", "b-alias"], None, ssh=False)
    assert len(problems) == 1
    assert "b, b-alias all resolve to 10.0.0.2" in problems[0] and "once" in problems[0]


# ---- check_hosts: the network interface -----------------------------------------------------


def test_a_missing_interface_lists_the_ones_that_exist(fake_network):
    problems = check_hosts(["a", "b"], "eth9", ssh=False)
    assert len(problems) == 1
    assert "'eth9' does not exist on this machine" in problems[0] and "eth0, ib0, lo" in problems[0]


def test_every_interface_of_a_comma_separated_list_is_checked(fake_network):
    problems = check_hosts(["a", "b"], "eth0,eth9", ssh=False)
    assert len(problems) == 1 and "'eth9'" in problems[0]


def test_the_loopback_interface_cannot_connect_several_hosts(fake_network):
    problems = check_hosts(["a", "b"], "lo", ssh=False)
    assert len(problems) == 1 and "loopback interface" in problems[0]
    assert check_hosts(["a"], "lo", ssh=False) == []


def test_an_interface_without_an_address_is_a_problem(fake_network):
    problems = check_hosts(["a", "b"], "ib0", ssh=False)
    assert len(problems) == 1 and "no IP address" in problems[0]


# ---- check_hosts: ssh -----------------------------------------------------------------------


def test_healthy_hosts_pass_and_only_remote_ones_are_ssh_ed(fake_ssh):
    assert check_hosts(["a", "b", "c"], "eth0") == []
    called = sorted(args[-2] for args in fake_ssh.calls())
    assert called == ["b", "c"], "horovodrun does not ssh to this machine, so neither does the check"
    for args in fake_ssh.calls():
        assert "BatchMode=yes" in args and any(a.startswith("ConnectTimeout=") for a in args)


def test_ssh_port_and_identity_are_passed_on(fake_ssh):
    assert check_hosts(["a", "b"], None, ssh_port=2222, ssh_identity_file="/k/id") == []
    (args,) = fake_ssh.calls()
    assert args[args.index("-p") + 1] == "2222" and args[args.index("-i") + 1] == "/k/id"


def test_a_host_that_refuses_ssh_gets_the_fix(fake_ssh):
    fake_ssh.set({"b": {"refuse": True}})
    problems = check_hosts(["a", "b"], None)
    assert len(problems) == 1
    text = problems[0]
    assert "Cannot log in to 'b'" in text and "Connection refused" in text and "ssh-copy-id b" in text


def test_an_interface_missing_on_a_remote_host_is_reported(fake_ssh):
    fake_ssh.set({"c": {"hostname": "c", "missing": ["eth0"]}})
    problems = check_hosts(["a", "b", "c"], "eth0")
    assert len(problems) == 1 and "do not exist on 'c'" in problems[0]


def test_a_remote_host_that_resolves_its_own_name_to_loopback_is_reported(fake_ssh):
    fake_ssh.set({"b": {"hostname": "b", "self": ["127.0.1.1"]}})
    problems = check_hosts(["a", "b"], None)
    assert len(problems) == 1 and "On 'b'" in problems[0] and "127.0.1.1" in problems[0]


def test_two_machines_with_one_hostname_are_reported(fake_ssh):
    fake_ssh.set({"b": {"hostname": "node"}, "c": {"hostname": "node"}})
    problems = check_hosts(["a", "b", "c"], None)
    assert len(problems) == 1
    assert "b, c all call themselves 'node'" in problems[0] and "MPI_Comm_split" in problems[0]


def test_a_remote_host_named_like_this_machine_is_reported(fake_ssh):
    fake_ssh.set({"b": {"hostname": "a"}})
    problems = check_hosts(["a", "b"], None)
    assert len(problems) == 1 and "all call themselves 'a'" in problems[0]


def test_ssh_false_skips_the_login_check(fake_ssh):
    fake_ssh.set({"b": {"refuse": True}})
    assert check_hosts(["a", "b"], None, ssh=False) == []
    assert fake_ssh.calls() == []


def test_no_ssh_on_path_skips_the_login_check_by_default(fake_network, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert check_hosts(["a", "b"], None) == []
    problems = check_hosts(["a", "b"], None, ssh=True)
    assert len(problems) == 1 and "ssh is not installed" in problems[0]
