"""ipvsadm's option grammar: clusters, optional values, address forms, and its error messages/status."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from gridlb.ipvsadm.parse import Cmd, Command, inet_aton, parse_command, string_to_number
from gridlb.table import ForwardMethod, RealKey, ServiceKey
from tests.ipvsadm.helpers import NO_DNS, restore, run

TRYHELP = "Try `ipvsadm -h' or 'ipvsadm --help' for more information.\n"


def parse(line: str) -> Command:
    return parse_command(["ipvsadm", *line.split()], NO_DNS)


def test_combined_short_options_and_values() -> None:
    cmd = parse("-Ln")
    assert cmd.cmd is Cmd.LIST and cmd.numeric
    cmd = parse("-At10.0.0.1:80 -srr")
    assert (cmd.svc.addr, cmd.svc.port, cmd.svc.sched_name) == (ip_address("10.0.0.1"), 80, "rr")
    cmd = parse("--add-server --tcp-service=10.0.0.1:80 --real-server 10.0.0.2 --masquerading --weight=7")
    assert (cmd.cmd, cmd.dest.port, cmd.dest.fwd, cmd.dest.weight) == (Cmd.ADDDEST, 80, 0, 7)


def test_persistent_takes_an_optional_value() -> None:
    assert parse("-A -t 10.0.0.1:80 -p").svc.timeout == 360
    assert parse("-A -t 10.0.0.1:80 -p -s rr").svc.timeout == 360
    assert parse("-A -t 10.0.0.1:80 -p 60 -s rr").svc.timeout == 60
    assert parse("-A -t 10.0.0.1:0 -p 1").svc.port == 0


def test_addresses_ports_and_names() -> None:
    assert parse("-A -t [fd00::1]:gsiftp").svc.port == 2811
    assert parse("-A -t 10.1:http").svc.addr == ip_address("10.0.0.1")  # inet_aton's short forms
    assert parse("-L -u fd00::1").svc.port == 0  # a bare IPv6 address has no port
    assert parse("-A -f 5 -6").svc.af == 6
    assert inet_aton("0x7f.1") == ip_address("127.0.0.1")
    assert inet_aton("010.0.0.1") == ip_address("8.0.0.1")
    assert inet_aton("256.0.0.1") is None
    assert string_to_number(" +42", 0, 100) == 42
    assert string_to_number("42x", 0, 100) == -1


@pytest.mark.parametrize(
    ("line", "status", "message"),
    [
        ("-nL", 255, TRYHELP),
        ("-Q", 255, TRYHELP),
        ("", 0, None),
        ("-L --bogus", 255, "--bogus: unknown option\n"),
        ("-L -w", 255, "-w: missing argument\n"),
        ("-L -A", 2, "invalid option `-A'\n"),
        ("-L foo", 2, "unexpected argument foo\n"),
        ("-A -t 10.0.0.1", 2, "Zero port specified for non-persistent service\n"),
        ("-A -t 80", 2, "illegal virtual server address[:port] specified\n"),
        ("-A -t 10.0.0.1:99999", 2, "illegal virtual server address[:port] specified\n"),
        ("-A -t 10.0.0.1:80 -o", 2, "One-Packet Scheduling is only for UDP virtual services\n"),
        ("-A -t 10.0.0.1:80 -s rr -s wlc", 2, "multiple 'scheduler' options specified\n"),
        ("-A -t 10.0.0.1:80 -b sh-port", 2, "incompatible scheduler flag `sh-port'\n"),
        ("-A -t 10.0.0.1:80 -s sh -b nope", 2, "invalid scheduler flag `nope'\n"),
        ("-A -t 10.0.0.1:80 -p 0", 2, "invalid timeout value `0' specified\n"),
        ("-A -f 0", 2, "invalid fwmark value `0' specified\n"),
        ("-A -t [fd00::1]:80 -M 200", 2, "illegal ipv6 netmask specified\n"),
        ("-A -6 -f 1", 2, "-6 used before -f\n\n"),
        ("-D", 2, "You need to supply the 'service-address' option for the 'delete-service' command\n"),
        ("-C -n", 2, "Illegal 'numeric' option with the 'flush' command\n"),
        (
            "-L -c --timeout",
            2,
            "The option 'timeout' conflicts with the 'connection' option in the 'list' command\n",
        ),
        ("-L --timeout --persistent-conn", 2, "options conflicts in the list command\n"),
        ("-a -t 10.0.0.1:80 -r 10.0.0.2 -w 65536", 2, "illegal weight specified\n"),
        (
            "-a -t 10.0.0.1:80 -r fd00::2 -g",
            2,
            "Different address family is allowed only for tunneling servers\n",
        ),
        ("-a -t 10.0.0.1:80 -r 10.0.0.2 --tun-type gre", 2, "Tunnel options conflict with forward method\n"),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gue",
            2,
            "You need to supply the 'tun-port' option for the 'gue' tunnel type\n",
        ),
        ("--set 1 2", 2, "--set option requires 3 timeout values\n"),
        ("--start-daemon sideways", 2, "illegal start-daemon parameter specified\n"),
        ("-A -t 10.0.0.1:80 -s nosuch", 255, "Scheduler or persistence engine not found\n"),
        ("-A -t 10.0.0.1:80 --pe nosuch", 255, "Scheduler or persistence engine not found\n"),
        ("-E -t 10.0.0.1:80", 255, "No such service\n"),
        ("-D -t 10.0.0.1:80", 255, "No such service\n"),
        ("-a -t 10.0.0.1:80 -r 10.0.0.2", 255, "Service not defined\n"),
        ("-L -t 10.0.0.1:80", 1, "No such service\n"),
        ("-Z -t 10.0.0.1:80", 255, "No such service\n"),
        ("--stop-daemon master", 255, "No daemon is running\n"),
    ],
)
def test_errors_say_what_ipvsadm_says(line: str, status: int, message: str | None) -> None:
    r = run(line)
    assert r.status == status
    if message is not None:
        assert r.err == message


def test_destination_commands_follow_the_kernel() -> None:
    t = restore(
        "-A -t 10.0.0.1:80\n-a -t 10.0.0.1:80 -r 10.0.0.2:8080 -g\n-a -t 10.0.0.1:80 -r 10.0.0.3:8080 -m\n"
    )
    svc = t.service(ServiceKey.tcp("10.0.0.1", 80))
    assert svc is not None
    assert [d.key for d in svc.dests] == [
        RealKey.parse("10.0.0.3:8080"),
        RealKey.parse("10.0.0.2:80"),
    ]  # -g: port forced
    assert svc.dests[0].spec.forward is ForwardMethod.MASQ
    again = run("-a -t 10.0.0.1:80 -r 10.0.0.2", t)
    assert (again.status, again.err) == (255, "Destination already exists\n")
    assert run("-e -t 10.0.0.1:80 -r 10.0.0.9", t).err == "No such destination\n"
    assert run("-d -t 10.0.0.1:80 -r 10.0.0.9", t).err == "No such destination\n"
    assert run("-a -t 10.0.0.1:80 -r 224.0.0.1", t).err.startswith("Invalid operation.")
    assert run("-a -t 10.0.0.1:80 -r 10.0.0.4 -x 5 -y 9", t).err == "Numerical result out of range\n"
    edited = run("-e -t 10.0.0.1:80 -r 10.0.0.2 -w 0", t).table.service(svc.key)
    assert edited is not None and edited.dests[1].spec.weight == 0  # edited in place, order kept
    gone = run("-D -t 10.0.0.1:80", t).table
    assert gone.services == ()
    assert run("-C", t).table.services == ()


def test_help_and_version_go_to_stdout_with_status_0() -> None:
    r = run("-h")
    assert r.status == 0 and r.out.startswith(
        "ipvsadm v1.31 2019/12/24 (compiled with popt and IPVS v1.2.1)\nUsage:\n"
    )
    assert run("--version").out == "ipvsadm v1.31 2019/12/24 (compiled with popt and IPVS v1.2.1)\n"
