"""The `gridlb check gridftp|xrootd` command lines keepalived's MISC_CHECK runs, one table per check kind.

The keepalived.conf renderer writes a GridFTP or XRootD check as `MISC_CHECK { misc_path "<gridlb>
check KIND [options] ADDR:PORT" }` and the importer reads that command line back into the check block
it came from. Both walk the same `CheckCommand` table, so an option is added in one place:

* an `Option` ties a command-line flag to the check block's field (what the importer fills) and to the
  resolved `CheckSpec` attribute (what the renderer writes, unless it equals `skip`);
* a switch (`--no-data-address-check`) is written when its `CheckSpec` value is false and read back as
  the field set to false;
* `--vip` and `--misc-dynamic-weight` are derived by the renderer from the service's address and the
  real server's weight; the importer reads past them.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gridlb.config import defaults as D
from gridlb.config.keepalived_conf import fmt, number
from gridlb.config.schema import CheckSpec
from gridlb.table import IPAddress

#: The port `gridlb check gridftp` assumes when its target has none (`gridlb check xrootd`: 1094).
GRIDFTP_DEFAULT_PORT = 2811

#: Flags the renderer derives from the service and the real server, not from the check block.
DERIVED_FLAGS = ("--vip", "--misc-dynamic-weight")


@dataclass(frozen=True, slots=True)
class Option:
    """One flag of the command: the check block's `field` it carries and the `CheckSpec` attribute
    the renderer writes it from (`spec` empty: read back only, never written)."""

    flag: str
    field: str
    spec: str = ""
    skip: object = None  # a value the renderer does not write (None never is)
    numeric: bool = False  # read back as a number
    switch: bool = False  # a bare flag: written when the spec value is false, read back as field=False

    def words(self, spec: CheckSpec) -> list[str]:
        """The words the renderer writes for this option (none when the value is the skipped one)."""
        if not self.spec:
            return []
        value = getattr(spec, self.spec)
        if self.switch:
            return [] if value else [self.flag]
        if value is None or value == self.skip:
            return []
        return [self.flag, fmt(value)]


@dataclass(frozen=True, slots=True)
class CheckCommand:
    """The command line of one check kind: `gridlb check KIND [options] TARGET`."""

    kind: str  # the `gridlb check` subcommand
    field: str  # the real server's check block (`gridftp_check`)
    options: tuple[Option, ...]
    default_port: int  # the port `gridlb check KIND` assumes for a target without one

    def argv(
        self, spec: CheckSpec, gridlb_command: str, vip: IPAddress | None, dynamic_weight: int | None
    ) -> list[str]:
        """The command the renderer writes for the resolved check `spec`."""
        argv = [gridlb_command, "check", self.kind]
        for option in self.options:
            argv += option.words(spec)
        if vip is not None:
            argv += ["--vip", str(vip)]
        if dynamic_weight is not None:
            argv += ["--misc-dynamic-weight", str(dynamic_weight)]
        argv.append(str(spec.target))
        return argv

    def parse(self, command: str) -> dict[str, Any] | None:
        """The check block a command line of this kind stands for, else None (not this command, or
        words it does not know). The target becomes `connect_ip` / `connect_port` unless given."""
        try:
            argv = shlex.split(command)
        except ValueError:
            return None
        if len(argv) < 4 or Path(argv[0]).name != "gridlb" or argv[1:3] != ["check", self.kind]:
            return None
        valued = {o.flag: o for o in self.options if not o.switch}
        switches = {o.flag: o for o in self.options if o.switch}
        data: dict[str, Any] = {}
        target: tuple[str, Any] | None = None
        words = argv[3:]
        i = 0
        while i < len(words):
            word = words[i]
            if word in switches:
                data[switches[word].field] = False
                i += 1
            elif (word in valued or word in DERIVED_FLAGS) and i + 1 < len(words):
                option = valued.get(word)
                if option is not None:
                    value = words[i + 1]
                    data[option.field] = number(value) if option.numeric else value
                i += 2
            elif not word.startswith("-") and target is None:
                target = split_target(word, self.default_port)
                if target is None:
                    return None
                i += 1
            else:
                return None
        if target is None:
            return None
        data.setdefault("connect_ip", target[0])
        data.setdefault("connect_port", target[1])
        return data


def split_target(text: str, default_port: int) -> tuple[str, int | float | str] | None:
    """`ADDR:PORT`, `[V6]:PORT` or a bare address (then `default_port`)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    return (host, number(port) if port else default_port) if host else None


_TIMEOUT = Option("--timeout", "connect_timeout", "connect_timeout_s", numeric=True)
_SOURCE = (
    Option("--bindto", "bindto", "bindto"),
    Option("--bind-port", "bind_port", "bind_port", skip=0, numeric=True),
    Option("--bind-if", "bind_if", "bind_if", skip=""),
)
_CONNECT = (
    Option("--connect-ip", "connect_ip"),
    Option("--connect-port", "connect_port", numeric=True),
)


def _command(kind: str, default_port: int, options: Sequence[Option]) -> CheckCommand:
    return CheckCommand(kind, f"{kind}_check", (*options, *_SOURCE, *_CONNECT), default_port)


#: One entry per check kind the renderer writes as a `gridlb check` MISC_CHECK, by check block field.
CHECK_COMMANDS: dict[str, CheckCommand] = {
    c.field: c
    for c in (
        _command(
            "gridftp",
            GRIDFTP_DEFAULT_PORT,
            (
                Option("--level", "level", "gridftp_level", skip=D.GRIDFTP_CHECK_LEVEL),
                _TIMEOUT,
                Option("--user", "user", "gridftp_user", skip=D.GRIDFTP_CHECK_USER),
                Option("--password", "password", "gridftp_password", skip=D.GRIDFTP_CHECK_PASSWORD),
                Option("--canary", "canary_path", "gridftp_canary_path", skip=""),
                Option(
                    "--no-data-address-check",
                    "check_data_address",
                    "gridftp_check_data_address",
                    switch=True,
                ),
            ),
        ),
        _command(
            "xrootd",
            D.XROOTD_PORT,
            (
                Option("--level", "level", "xrootd_level", skip=D.XROOTD_CHECK_LEVEL),
                _TIMEOUT,
                Option("--user", "user", "xrootd_user", skip=D.XROOTD_CHECK_USER),
                Option("--canary", "canary_path", "xrootd_canary_path", skip=""),
                Option("--no-redirect-check", "check_redirect", "xrootd_check_redirect", switch=True),
            ),
        ),
    )
}


def check_from_command(command: str) -> tuple[str, dict[str, Any]] | None:
    """The check block field and block a `gridlb check KIND ...` command line stands for, else None."""
    for field, cmd in CHECK_COMMANDS.items():
        data = cmd.parse(command)
        if data is not None:
            return field, data
    return None
