"""The `gridlb check gridftp|xrootd` command tables: written, read back, and accepted by `gridlb check`."""

from __future__ import annotations

import shlex
from dataclasses import replace
from ipaddress import ip_address

import pytest

from gridlb.cli.check import DEFAULT_PORT, DEFAULT_PORTS
from gridlb.cli.main import build_parser
from gridlb.config.check_command import CHECK_COMMANDS, CheckCommand, check_from_command
from gridlb.config.schema import CHECKER_BLOCKS, CheckKind, CheckSpec
from gridlb.table import RealKey

TARGET = RealKey(ip_address("10.0.0.11"), 2812)

#: Where a check connects from, as the renderer writes it and as the importer reads it back.
SOURCE = CheckSpec(
    kind=CheckKind.GRIDFTP,
    target=TARGET,
    connect_timeout_s=2.5,
    bindto=ip_address("10.0.0.2"),
    bind_port=1234,
    bind_if="lo",
)
SOURCE_BLOCK = {
    "connect_timeout": 2.5,
    "bindto": "10.0.0.2",
    "bind_port": 1234,
    "bind_if": "lo",
    "connect_ip": "10.0.0.11",
    "connect_port": 2812,
}

#: A check with every option away from what the renderer leaves out, and what the importer makes of it.
FULL = {
    "gridftp_check": replace(
        SOURCE,
        gridftp_level="canary",
        gridftp_canary_path="/store/canary",
        gridftp_check_data_address=False,
        gridftp_user="probe",
        gridftp_password="pass word",
    ),
    "xrootd_check": replace(
        SOURCE,
        kind=CheckKind.XROOTD,
        xrootd_level="canary",
        xrootd_canary_path="/store/canary",
        xrootd_user="probe",
        xrootd_check_redirect=False,
    ),
}
FULL_BLOCK = {
    "gridftp_check": {
        "level": "canary",
        "user": "probe",
        "password": "pass word",
        "canary_path": "/store/canary",
        "check_data_address": False,
        **SOURCE_BLOCK,
    },
    "xrootd_check": {
        "level": "canary",
        "user": "probe",
        "canary_path": "/store/canary",
        "check_redirect": False,
        **SOURCE_BLOCK,
    },
}


def test_every_gridlb_check_block_has_a_command_and_its_kind_runs_it() -> None:
    gridlb_blocks = {field for keyword, (field, _m) in CHECKER_BLOCKS.items() if keyword.endswith("_CHECK")}
    assert set(CHECK_COMMANDS) == {"gridftp_check", "xrootd_check"} <= gridlb_blocks
    for field, command in CHECK_COMMANDS.items():
        assert command.field == field
        assert CheckKind(command.kind).value == command.kind


@pytest.mark.parametrize("field", sorted(CHECK_COMMANDS))
def test_every_option_is_written_and_read_back(field: str) -> None:
    command = CHECK_COMMANDS[field]
    argv = command.argv(FULL[field], "/usr/local/bin/gridlb", ip_address("10.0.0.100"), 7)
    assert argv[:3] == ["/usr/local/bin/gridlb", "check", command.kind]
    assert argv[-5:] == ["--vip", "10.0.0.100", "--misc-dynamic-weight", "7", "10.0.0.11:2812"]
    written = {w for w in argv if w.startswith("--")} - {"--vip", "--misc-dynamic-weight"}
    assert written == {o.flag for o in command.options if o.spec}
    assert command.parse(shlex.join(argv)) == FULL_BLOCK[field]
    assert check_from_command(shlex.join(argv)) == (field, FULL_BLOCK[field])


@pytest.mark.parametrize("field", sorted(CHECK_COMMANDS))
def test_defaults_are_left_out(field: str) -> None:
    kind = CheckKind(CHECK_COMMANDS[field].kind)
    argv = CHECK_COMMANDS[field].argv(CheckSpec(kind=kind, target=TARGET), "gridlb", None, None)
    assert argv == ["gridlb", "check", kind.value, "--timeout", "5", "10.0.0.11:2812"]


@pytest.mark.parametrize("field", sorted(CHECK_COMMANDS))
def test_gridlb_check_takes_every_option_of_the_table(field: str) -> None:
    """The table and `gridlb check KIND` agree: each flag, with the value the importer would read."""
    command: CheckCommand = CHECK_COMMANDS[field]
    parser = build_parser()
    default = parser.parse_args(["check", command.kind, "10.0.0.11:2812"])
    for option in command.options:
        value = "7" if option.numeric else "login" if option.flag == "--level" else "10.0.0.9"
        words = [option.flag] if option.switch else [option.flag, value]
        args = parser.parse_args(["check", command.kind, *words, "10.0.0.11:2812"])
        dest = option.flag.removeprefix("--").replace("-", "_")
        if option.switch:
            assert getattr(args, dest) is True and getattr(default, dest) is False
        else:
            assert getattr(args, dest) == (int(value) if option.numeric else value) != getattr(default, dest)


def test_xrootd_command_parsing() -> None:
    parse = CHECK_COMMANDS["xrootd_check"].parse
    assert parse("gridlb check xrootd --level login --user probe [fd00::1]:1095") == {
        "level": "login",
        "user": "probe",
        "connect_ip": "fd00::1",
        "connect_port": 1095,
    }
    assert parse("gridlb check xrootd --connect-ip 10.0.0.9 --connect-port 1096 10.0.0.1:1094") == {
        "connect_ip": "10.0.0.9",
        "connect_port": 1096,
    }
    assert parse("gridlb check xrootd --password secret 10.0.0.1:1094") is None  # a GridFTP option
    assert parse("gridlb check xrootd --no-data-address-check 10.0.0.1:1094") is None
    assert parse("gridlb check gridftp 10.0.0.1:1094") is None
    assert parse("gridlb check xrootd --timeout") is None  # no target
    assert parse("gridlb check xrootd 10.0.0.1:1094 --timeout") is None  # a flag without its value
    assert CHECK_COMMANDS["gridftp_check"].parse("gridlb check gridftp --no-redirect-check h:1") is None
    assert check_from_command("gridlb check tcp 10.0.0.1:2811") is None


@pytest.mark.parametrize("field", sorted(CHECK_COMMANDS))
def test_a_target_without_a_port_gets_the_port_gridlb_check_assumes(field: str) -> None:
    """The importer reads a bare target with the same default port as `gridlb check KIND` uses."""
    cmd = CHECK_COMMANDS[field]
    args = build_parser().parse_args(["check", cmd.kind, "10.0.0.1"])
    assert cmd.default_port == DEFAULT_PORTS.get(cmd.kind, DEFAULT_PORT)
    assert args.target == "10.0.0.1"
    assert cmd.parse(f"gridlb check {cmd.kind} 10.0.0.1") == {
        "connect_ip": "10.0.0.1",
        "connect_port": cmd.default_port,
    }
