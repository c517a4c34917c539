"""ipvsadm 1.31's command-line grammar: popt option scanning, value parsing and option checks.

`parse_command(argv)` returns a `Command` (the C `struct ipvs_command_entry` plus option and format
bits) or raises `IpvsadmExit` with ipvsadm's message and exit status, exactly where ipvsadm calls
`fail()` (status 2) or `tryhelp_exit()` (status 255). Rules kept from ipvsadm.c: the first option
must be the command; short options cluster (`-Ln`); an option's value is the rest of the cluster or
the next word; `-p` takes an optional value (the next word unless it starts with '-'); each option
may appear once; the command/option table decides what is required, allowed or exclusive.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from gridlb.ipvsadm.names import Resolver
from gridlb.table import IPAddress

MAX_TIMEOUT = 86400 * 31
IPVS_SVC_PERSISTENT_TIMEOUT = 6 * 60
DEF_SCHED = "wlc"
SCHEDNAME_MAXLEN = 16
PENAME_MAXLEN = 16
INT_MAX = 2**31 - 1
UINT_MAX = 2**32 - 1
LONG_MAX = 2**63 - 1


class Cmd(enum.IntEnum):
    """ipvsadm's commands, numbered as CMD_* (1-based) so they index the option table."""

    ADD = 1
    EDIT = 2
    DEL = 3
    FLUSH = 4
    LIST = 5
    ADDDEST = 6
    DELDEST = 7
    EDITDEST = 8
    TIMEOUT = 9
    STARTDAEMON = 10
    STOPDAEMON = 11
    RESTORE = 12
    SAVE = 13
    ZERO = 14


CMDNAMES = (
    "add-service", "edit-service", "delete-service", "flush", "list", "add-server", "delete-server",
    "edit-server", "set", "start-daemon", "stop-daemon", "restore", "save", "zero",
)  # fmt: skip

OPTNAMES = (
    "numeric", "connection", "service-address", "scheduler", "persistent", "netmask", "real-server",
    "forwarding-method", "weight", "u-threshold", "l-threshold", "mcast-interface", "timeout",
    "daemon", "stats", "rate", "thresholds", "persistent-conn", "nosort", "syncid", "exact", "ops",
    "pe", "sched-flags", "mcast-group", "mcast-port", "mcast-ttl", "sync-maxlen", "tun-info",
    "tun-type", "tun-port", "tun-nocsum", "tun-csum", "tun-remcsum",
)  # fmt: skip


class Opt(enum.IntEnum):
    """OPTC_* bit numbers."""

    NUMERIC = 0
    CONNECTION = 1
    SERVICE = 2
    SCHEDULER = 3
    PERSISTENT = 4
    NETMASK = 5
    SERVER = 6
    FORWARD = 7
    WEIGHT = 8
    UTHRESHOLD = 9
    LTHRESHOLD = 10
    MCAST = 11
    TIMEOUT = 12
    DAEMON = 13
    STATS = 14
    RATE = 15
    THRESHOLDS = 16
    PERSISTENTCONN = 17
    NOSORT = 18
    SYNCID = 19
    EXACT = 20
    ONEPACKET = 21
    PERSISTENCE_ENGINE = 22
    SCHED_FLAGS = 23
    MCAST_GROUP = 24
    MCAST_PORT = 25
    MCAST_TTL = 26
    SYNC_MAXLEN = 27
    TUN_INFO = 28
    TUN_TYPE = 29
    TUN_PORT = 30
    TUN_NOCSUM = 31
    TUN_CSUM = 32
    TUN_REMCSUM = 33


# commands_v_options from ipvsadm.c: '+' compulsory, 'x' illegal, '1' exclusive, ' ' optional.
COMMANDS_V_OPTIONS = (
    "xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx",  # ADD
    "xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx",  # EDIT
    "xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",  # DEL
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",  # FLUSH
    " 11xxxxxxxxx11       xxxxxxx xxxxx",  # LIST
    "xx+xxx+    xxxxxxxxxxxxxxxxxx     ",  # ADDSRV
    "xx+xxx+xxxxxxxxxxxxxxxxxxxxxxxxxxx",  # DELSRV
    "xx+xxx+    xxxxxxxxxxxxxxxxxx     ",  # EDITSRV
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",  # TIMEOUT
    "xxxxxxxxxxx xxxxxxx xxxx    xxxxxx",  # STARTD
    "xxxxxxxxxxxxxxxxxxx xxxxxxxxxxxxxx",  # STOPD
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",  # RESTORE
    " xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",  # SAVE
    "xx xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",  # ZERO
)

assert all(len(row) == len(OPTNAMES) for row in COMMANDS_V_OPTIONS)

TUNNAMES = ("ipip", "gue", "gre")
TUN_FLAG_NAMES = ("nocsum", "csum", "remcsum")  # IP_VS_TUNNEL_ENCAP_FLAG_* values 0, 1, 2
TUNOPTS = (Opt.TUN_PORT, Opt.TUN_NOCSUM, Opt.TUN_CSUM, Opt.TUN_REMCSUM)
TUNNEL_TYPES_V_OPTIONS = ("xxxx", "+111", "x11x")  # ipip, gue, gre

# IP_VS_CONN_F_* forwarding methods and IP_VS_SVC_F_* flag bits
FWD_MASQ, FWD_LOCAL, FWD_TUNNEL, FWD_ROUTE = 0, 1, 2, 3
SVC_F_SCHED1, SVC_F_SCHED2, SVC_F_SCHED3 = 0x08, 0x10, 0x20
PROTO_NUMBERS = {"TCP": 6, "UDP": 17, "SCTP": 132}


class IpvsadmExit(Exception):
    """ipvsadm ended the process: `status` and what it printed to stderr (and stdout)."""

    def __init__(self, status: int, stderr: str = "", stdout: str = "") -> None:
        super().__init__(stderr)
        self.status = status
        self.stderr = stderr
        self.stdout = stdout


def fail(status: int, message: str) -> IpvsadmExit:
    """ipvsadm's fail(): the message and a newline on stderr, then exit(status)."""
    return IpvsadmExit(status, message + "\n")


def tryhelp(program: str) -> IpvsadmExit:
    return IpvsadmExit(255, f"Try `{program} -h' or '{program} --help' for more information.\n")


@dataclass
class SvcArgs:
    """ipvs_service_t as the options fill it."""

    af: int = 0  # 0 (unset), 4 or 6
    protocol: str = ""  # "", "TCP", "UDP", "SCTP"
    addr: IPAddress | None = None
    port: int = 0
    fwmark: int = 0
    sched_name: str = ""
    persistent: bool = False
    timeout: int = 0
    netmask: int = 0xFFFFFFFF  # IPv4: the mask as a host-order integer; IPv6: the prefix length
    one_packet: bool = False
    pe_name: str = ""
    sched_bits: int = 0


@dataclass
class DestArgs:
    """ipvs_dest_t as the options fill it."""

    af: int = 0
    addr: IPAddress | None = None
    port: int = 0
    fwd: int = FWD_ROUTE
    weight: int = 1
    u_threshold: int = 0
    l_threshold: int = 0
    tun_type: int = 0
    tun_port: int = 0
    tun_flags: int = 0


@dataclass
class Command:
    """One parsed ipvsadm command line."""

    cmd: Cmd
    options: int = 0
    svc: SvcArgs = field(default_factory=SvcArgs)
    dest: DestArgs = field(default_factory=DestArgs)
    timeouts: tuple[int, int, int] = (0, 0, 0)
    daemon_state: str = ""

    @property
    def numeric(self) -> bool:
        """Return True when -n was given (derived from the option bits, like every listing flag)."""
        return self.has(Opt.NUMERIC)

    def has(self, opt: Opt) -> bool:
        return bool(self.options & (1 << opt))


# ---- C library number and address parsing -------------------------------------------------------


def _strtol(text: str, base: int = 10) -> tuple[int | None, str]:
    """strtol(): (value or None when nothing converted, the unparsed rest); value clamps like ERANGE."""
    s = text.lstrip(" \t\n\v\f\r")
    sign = 1
    if s[:1] in "+-" and s[:1]:
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if base == 0:
        if s[:2].lower() == "0x" and len(s) > 2 and s[2] in "0123456789abcdefABCDEF":
            base, s = 16, s[2:]
        elif s[:1] == "0":
            base = 8
        else:
            base = 10
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"[:base]
    n = 0
    while n < len(s) and s[n].lower() in digits:
        n += 1
    if n == 0:
        return None, text
    return sign * int(s[:n], base), s[n:]


def string_to_number(text: str, low: int, high: int) -> int:
    """ipvsadm's string_to_number(): the decimal number in [low, high], else -1."""
    value, rest = _strtol(text)
    if value is None or rest != "" or not (-LONG_MAX - 1 <= value <= LONG_MAX):
        return -1
    return value if low <= value <= high else -1


def inet_aton(text: str) -> IPv4Address | None:
    """glibc inet_aton(): 1 to 4 parts (decimal, 0octal, 0xhex), the last filling the remaining bytes."""
    s = text
    for i, ch in enumerate(s):
        if ch.isspace():
            s = s[:i]
            break
    parts = s.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values = []
    for part in parts:
        if not part or not (part[0].isdigit()):
            return None
        value, rest = _strtol(part, 0)
        if value is None or rest or value < 0:
            return None
        values.append(value)
    *head, last = values
    if any(v > 255 for v in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    number = last
    for i, v in enumerate(head):
        number |= v << (24 - 8 * i)
    return IPv4Address(number)


def inet_pton6(text: str) -> IPv6Address | None:
    """inet_pton(AF_INET6, ...): a plain IPv6 address (no zone index)."""
    if "%" in text or not text or text != text.strip():
        return None
    try:
        return IPv6Address(text)
    except ValueError:
        return None


SERVICE_NONE, SERVICE_ADDR, SERVICE_PORT = 0, 1, 2


def parse_service(text: str, protocol: str, resolver: Resolver) -> tuple[int, int, IPAddress | None, int]:
    """ipvsadm's parse_service(): (result bits, af, addr, port) for `host[:port]` / `[v6]:port`."""
    if all(c in "0123456789" for c in text):  # str_is_digit(); true for "" too
        return SERVICE_NONE, 0, None, 0
    buf = text
    portp: str | None = None
    if buf.startswith("["):
        buf = buf[1:]
        host, bracket, rest = buf.partition("]")
        if not bracket or not rest.startswith(":"):
            return SERVICE_NONE, 0, None, 0
        buf, portp = host, rest[1:]
    addr6 = inet_pton6(buf)
    af: int
    addr: IPAddress
    if addr6 is not None:
        af, addr = 6, addr6
    else:
        portp = None
        if ":" in buf:
            buf, _, portp = buf.rpartition(":")
        a4 = inet_aton(buf)
        if a4 is None:
            a4 = resolver.addr_by_host(buf)
        if a4 is None:
            return SERVICE_NONE, 0, None, 0
        af, addr = 4, a4
    result = SERVICE_ADDR
    port = 0
    if portp is not None:
        result |= SERVICE_PORT
        number = string_to_number(portp, 0, 65535)
        if number == -1:
            named = resolver.port_by_service(portp, protocol.lower()) if protocol else None
            if named is None:
                return SERVICE_NONE, 0, None, 0
            number = named
        port = number
    return result, af, addr, port


# ---- popt ------------------------------------------------------------------------------------------


class ArgKind(enum.Enum):
    NONE = 0
    STRING = 1
    OPTIONAL = 2


@dataclass(frozen=True)
class PoptOption:
    long: str
    short: str
    kind: ArgKind
    val: str  # the value poptGetNextOpt returns (a short letter or a TAG name)


N, S, OPT = ArgKind.NONE, ArgKind.STRING, ArgKind.OPTIONAL
OPTIONS_TABLE = (
    PoptOption("add-service", "A", N, "A"),
    PoptOption("edit-service", "E", N, "E"),
    PoptOption("delete-service", "D", N, "D"),
    PoptOption("clear", "C", N, "C"),
    PoptOption("list", "L", N, "L"),
    PoptOption("list", "l", N, "l"),
    PoptOption("zero", "Z", N, "Z"),
    PoptOption("add-server", "a", N, "a"),
    PoptOption("edit-server", "e", N, "e"),
    PoptOption("delete-server", "d", N, "d"),
    PoptOption("set", "", N, "SET"),
    PoptOption("help", "h", N, "h"),
    PoptOption("version", "v", N, "v"),
    PoptOption("restore", "R", N, "R"),
    PoptOption("save", "S", N, "S"),
    PoptOption("start-daemon", "", S, "START_DAEMON"),
    PoptOption("stop-daemon", "", S, "STOP_DAEMON"),
    PoptOption("tcp-service", "t", S, "t"),
    PoptOption("udp-service", "u", S, "u"),
    PoptOption("sctp-service", "", S, "SCTP_SERVICE"),
    PoptOption("fwmark-service", "f", S, "f"),
    PoptOption("scheduler", "s", S, "s"),
    PoptOption("persistent", "p", OPT, "p"),
    PoptOption("netmask", "M", S, "M"),
    PoptOption("real-server", "r", S, "r"),
    PoptOption("masquerading", "m", N, "m"),
    PoptOption("ipip", "i", N, "i"),
    PoptOption("gatewaying", "g", N, "g"),
    PoptOption("weight", "w", S, "w"),
    PoptOption("u-threshold", "x", S, "x"),
    PoptOption("l-threshold", "y", S, "y"),
    PoptOption("numeric", "n", N, "n"),
    PoptOption("connection", "c", N, "c"),
    PoptOption("mcast-interface", "", S, "MCAST_INTERFACE"),
    PoptOption("syncid", "", S, "I"),
    PoptOption("timeout", "", N, "TIMEOUT"),
    PoptOption("daemon", "", N, "DAEMON"),
    PoptOption("stats", "", N, "STATS"),
    PoptOption("rate", "", N, "RATE"),
    PoptOption("thresholds", "", N, "THRESHOLDS"),
    PoptOption("persistent-conn", "", N, "PERSISTENTCONN"),
    PoptOption("nosort", "", N, "NO_SORT"),
    PoptOption("sort", "", N, "SORT"),
    PoptOption("exact", "X", N, "X"),
    PoptOption("ipv6", "6", N, "6"),
    PoptOption("ops", "o", N, "o"),
    PoptOption("pe", "", S, "PERSISTENCE_ENGINE"),
    PoptOption("sched-flags", "b", S, "b"),
    PoptOption("mcast-group", "", S, "MCAST_GROUP"),
    PoptOption("mcast-port", "", S, "MCAST_PORT"),
    PoptOption("mcast-ttl", "", S, "MCAST_TTL"),
    PoptOption("sync-maxlen", "", S, "SYNC_MAXLEN"),
    PoptOption("tun-info", "", N, "TUN_INFO"),
    PoptOption("tun-type", "", S, "TUN_TYPE"),
    PoptOption("tun-port", "", S, "TUN_PORT"),
    PoptOption("tun-nocsum", "", N, "TUN_NOCSUM"),
    PoptOption("tun-csum", "", N, "TUN_CSUM"),
    PoptOption("tun-remcsum", "", N, "TUN_REMCSUM"),
)
_BY_LONG = {o.long: o for o in reversed(OPTIONS_TABLE)}  # first entry wins ("list" -> -L)
_BY_SHORT = {o.short: o for o in OPTIONS_TABLE if o.short}

POPT_ERRORS = {
    "NOARG": "missing argument",
    "BADOPT": "unknown option",
    "UNWANTEDARG": "option does not take an argument",
}


class PoptError(Exception):
    def __init__(self, code: str, bad: str) -> None:
        super().__init__(code)
        self.code = code
        self.bad = bad


class Popt:
    """The subset of popt ipvsadm relies on: options in any order, leftovers kept as arguments."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.next = 1
        self.cluster = ""  # the rest of a short-option cluster
        self.cluster_word = ""
        self.leftovers: list[str] = []
        self.rest_are_args = False

    def get_next_opt(self) -> tuple[str, str | None] | None:
        """Return (val, optarg) of the next option, None at the end; raise PoptError."""
        while True:
            if self.cluster:
                ch, self.cluster = self.cluster[0], self.cluster[1:]
                opt = _BY_SHORT.get(ch)
                if opt is None:
                    raise PoptError("BADOPT", self.cluster_word)
                if opt.kind is ArgKind.NONE:
                    return opt.val, None
                if self.cluster:
                    arg = self.cluster[1:] if self.cluster.startswith("=") else self.cluster
                    self.cluster = ""
                    return opt.val, arg
                return opt.val, self._next_word(opt, self.cluster_word)
            if self.next >= len(self.argv):
                return None
            word = self.argv[self.next]
            self.next += 1
            if self.rest_are_args or not word.startswith("-") or word == "-":
                self.leftovers.append(word)
                continue
            if word == "--":
                self.rest_are_args = True
                continue
            if word.startswith("--"):
                name, eq, value = word[2:].partition("=")
                opt = _BY_LONG.get(name)
                if opt is None:
                    raise PoptError("BADOPT", word)
                if opt.kind is ArgKind.NONE:
                    if eq:
                        raise PoptError("UNWANTEDARG", word)
                    return opt.val, None
                if eq:
                    return opt.val, value
                return opt.val, self._next_word(opt, word)
            self.cluster, self.cluster_word = word[1:], word

    def _next_word(self, opt: PoptOption, bad: str) -> str | None:
        if self.next >= len(self.argv):
            if opt.kind is ArgKind.OPTIONAL:
                return None
            raise PoptError("NOARG", bad)
        word = self.argv[self.next]
        if opt.kind is ArgKind.OPTIONAL and word.startswith("-"):
            return None
        self.next += 1
        return word

    def get_arg(self) -> str | None:
        """poptGetArg(): the next leftover argument (options scanning must be finished)."""
        while self.next < len(self.argv):  # pragma: no cover - scanning always reaches the end
            self.leftovers.append(self.argv[self.next])
            self.next += 1
        return self.leftovers.pop(0) if self.leftovers else None


# ---- parse_options / the option checks of process_options -----------------------------------------

FIRST_COMMANDS = {
    "A": Cmd.ADD, "E": Cmd.EDIT, "D": Cmd.DEL, "a": Cmd.ADDDEST, "e": Cmd.EDITDEST, "d": Cmd.DELDEST,
    "C": Cmd.FLUSH, "L": Cmd.LIST, "l": Cmd.LIST, "Z": Cmd.ZERO, "SET": Cmd.TIMEOUT, "R": Cmd.RESTORE,
    "S": Cmd.SAVE, "START_DAEMON": Cmd.STARTDAEMON, "STOP_DAEMON": Cmd.STOPDAEMON,
}  # fmt: skip


class HelpRequested(Exception):
    """-h (usage on stdout, status 0) or -v (version on stdout, status 0)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class PoptFailure(Exception):
    """popt reported an error after the command: ipvsadm prints it and returns -1 (status 255)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _set_option(cmd: Command, opt: Opt) -> None:
    bit = 1 << opt
    if cmd.options & bit:
        raise fail(2, f"multiple '{OPTNAMES[opt]}' options specified")
    cmd.options |= bit


def parse_sched_flags(sched: str, text: str) -> int:
    """ipvsadm's parse_sched_flags(): comma-separated names to IP_VS_SVC_F_SCHED* bits."""
    sched = sched or DEF_SCHED
    flags = 0
    names = [f for f in text.split(",") if f] or [""]
    for flag in names:
        if flag == "flag-1":
            flags |= SVC_F_SCHED1
        elif flag == "flag-2":
            flags |= SVC_F_SCHED2
        elif flag == "flag-3":
            flags |= SVC_F_SCHED3
        elif flag in ("sh-fallback", "sh-port", "mh-fallback", "mh-port"):
            flags |= SVC_F_SCHED1 if flag.endswith("fallback") else SVC_F_SCHED2
            if sched != flag[:2]:
                raise fail(2, f"incompatible scheduler flag `{flag}'")
        else:
            raise fail(2, f"invalid scheduler flag `{flag}'")
    return flags


def parse_timeout(text: str | None, low: int, high: int) -> int:
    if text is None:
        return IPVS_SVC_PERSISTENT_TIMEOUT
    value = string_to_number(text, low, high)
    if value == -1:
        raise fail(2, f"invalid timeout value `{text}' specified")
    return value


def parse_command(argv: list[str], resolver: Resolver) -> Command:
    """parse_options() and the checks at the top of process_options(); argv[0] is the program name."""
    program = argv[0]
    popt = Popt(argv)
    try:
        first = popt.get_next_opt()
    except PoptError:
        raise tryhelp(program) from None
    if first is None:
        raise tryhelp(program)
    val, optarg = first
    if val in ("h", "v"):
        raise HelpRequested(val)
    if val not in FIRST_COMMANDS:
        raise tryhelp(program)
    cmd = Command(FIRST_COMMANDS[val])
    if cmd.cmd in (Cmd.STARTDAEMON, Cmd.STOPDAEMON):
        if optarg in ("master", "backup"):
            cmd.daemon_state = optarg
        elif cmd.cmd is Cmd.STARTDAEMON:
            raise fail(2, "illegal start-daemon parameter specified")
        else:
            raise fail(2, "illegal start_daemon specified")
    sched_flags_arg = ""
    svc, dest = cmd.svc, cmd.dest
    while True:
        try:
            got = popt.get_next_opt()
        except PoptError as exc:
            raise PoptFailure(f"{exc.bad}: {POPT_ERRORS[exc.code]}") from None
        if got is None:
            break
        val, optarg = got
        arg = optarg if optarg is not None else ""
        if val in ("t", "u", "SCTP_SERVICE"):
            _set_option(cmd, Opt.SERVICE)
            svc.protocol = {"t": "TCP", "u": "UDP"}.get(val, "SCTP")
            result, af, addr, port = parse_service(arg, svc.protocol, resolver)
            if not result & SERVICE_ADDR:
                raise fail(2, "illegal virtual server address[:port] specified")
            svc.af, svc.addr, svc.port = af, addr, port
            if af == 6:
                svc.netmask = 128
        elif val == "f":
            _set_option(cmd, Opt.SERVICE)
            svc.af, svc.protocol = 4, "TCP"
            value, rest = _strtol(arg)
            if value is None or rest or value <= 0 or value > UINT_MAX:
                raise fail(2, f"invalid fwmark value `{arg}' specified")
            svc.fwmark = value
        elif val == "s":
            _set_option(cmd, Opt.SCHEDULER)
            svc.sched_name = arg[: SCHEDNAME_MAXLEN - 1]
        elif val == "p":
            _set_option(cmd, Opt.PERSISTENT)
            svc.persistent = True
            svc.timeout = parse_timeout(optarg, 1, MAX_TIMEOUT)
        elif val == "M":
            _set_option(cmd, Opt.NETMASK)
            if svc.af != 6:
                mask = inet_aton(arg) or resolver.addr_by_host(arg)
                if mask is None:
                    raise fail(2, "illegal virtual server persistent mask specified")
                svc.netmask = int(mask)
            else:
                svc.netmask = _atoi(arg)
                if not 1 <= svc.netmask <= 128:
                    raise fail(2, "illegal ipv6 netmask specified")
        elif val == "r":
            _set_option(cmd, Opt.SERVER)
            result, af, addr, port = parse_service(arg, svc.protocol, resolver)
            if result:
                dest.af, dest.addr, dest.port = af, addr, port
            else:  # t_dest keeps the service's values when parse_service fails early
                dest.af, dest.addr, dest.port = svc.af, svc.addr, svc.port
            if not result & SERVICE_ADDR:
                raise fail(2, "illegal real server address[:port] specified")
            if result == SERVICE_ADDR:
                dest.port = svc.port
        elif val in ("i", "g", "m"):
            _set_option(cmd, Opt.FORWARD)
            dest.fwd = {"i": FWD_TUNNEL, "g": FWD_ROUTE, "m": FWD_MASQ}[val]
        elif val == "w":
            _set_option(cmd, Opt.WEIGHT)
            dest.weight = string_to_number(arg, 0, 65535)
            if dest.weight == -1:
                raise fail(2, "illegal weight specified")
        elif val in ("x", "y"):
            _set_option(cmd, Opt.UTHRESHOLD if val == "x" else Opt.LTHRESHOLD)
            value = string_to_number(arg, 0, INT_MAX)
            if value == -1:
                raise fail(2, f"illegal {'u' if val == 'x' else 'l'}_threshold specified")
            if val == "x":
                dest.u_threshold = value
            else:
                dest.l_threshold = value
        elif val == "c":
            _set_option(cmd, Opt.CONNECTION)
        elif val == "n":
            _set_option(cmd, Opt.NUMERIC)
        elif val == "MCAST_INTERFACE":
            _set_option(cmd, Opt.MCAST)
        elif val == "I":
            _set_option(cmd, Opt.SYNCID)
            if string_to_number(arg, 0, 255) == -1:
                raise fail(2, "illegal syncid specified")
        elif val == "TIMEOUT":
            _set_option(cmd, Opt.TIMEOUT)
        elif val == "DAEMON":
            _set_option(cmd, Opt.DAEMON)
        elif val in ("STATS", "RATE", "THRESHOLDS", "PERSISTENTCONN", "NO_SORT", "X", "TUN_INFO"):
            opt = {
                "STATS": Opt.STATS, "RATE": Opt.RATE, "THRESHOLDS": Opt.THRESHOLDS,
                "PERSISTENTCONN": Opt.PERSISTENTCONN, "NO_SORT": Opt.NOSORT, "X": Opt.EXACT,
                "TUN_INFO": Opt.TUN_INFO,
            }[val]  # fmt: skip
            _set_option(cmd, opt)
        elif val == "SORT":
            pass
        elif val == "6":
            if svc.fwmark:
                svc.af, svc.netmask = 6, 128
            else:
                raise fail(2, "-6 used before -f\n")
        elif val == "o":
            _set_option(cmd, Opt.ONEPACKET)
            svc.one_packet = True
        elif val == "PERSISTENCE_ENGINE":
            _set_option(cmd, Opt.PERSISTENCE_ENGINE)
            svc.pe_name = arg[:PENAME_MAXLEN]
        elif val == "b":
            _set_option(cmd, Opt.SCHED_FLAGS)
            sched_flags_arg = arg[:127]
        elif val == "MCAST_GROUP":
            _set_option(cmd, Opt.MCAST_GROUP)
        elif val in ("MCAST_PORT", "MCAST_TTL", "SYNC_MAXLEN"):
            opt, high, what = {
                "MCAST_PORT": (Opt.MCAST_PORT, 65535, "mcast-port"),
                "MCAST_TTL": (Opt.MCAST_TTL, 255, "mcast-ttl"),
                "SYNC_MAXLEN": (Opt.SYNC_MAXLEN, 65535 - 20 - 8, "sync-maxlen"),
            }[val]
            _set_option(cmd, opt)
            if string_to_number(arg, 1, high) == -1:
                raise fail(2, f"illegal {what} specified")
        elif val == "TUN_TYPE":
            _set_option(cmd, Opt.TUN_TYPE)
            if arg not in TUNNAMES:
                raise fail(2, "illegal tunnel type specified")
            dest.tun_type = TUNNAMES.index(arg)
        elif val == "TUN_PORT":
            _set_option(cmd, Opt.TUN_PORT)
            dest.tun_port = string_to_number(arg, 1, 65535)
            if dest.tun_port == -1:
                raise fail(2, "illegal tunnel port specified")
        elif val in ("TUN_NOCSUM", "TUN_CSUM", "TUN_REMCSUM"):
            _set_option(
                cmd, {"TUN_NOCSUM": Opt.TUN_NOCSUM, "TUN_CSUM": Opt.TUN_CSUM}.get(val, Opt.TUN_REMCSUM)
            )
            dest.tun_flags |= {"TUN_NOCSUM": 0, "TUN_CSUM": 1, "TUN_REMCSUM": 2}[val]
        else:
            raise fail(2, f"invalid option `{popt.argv[popt.next - 1]}'")
    if cmd.cmd is Cmd.TIMEOUT:
        args = [popt.get_arg() for _ in range(3)]
        if None in args:
            raise fail(2, "--set option requires 3 timeout values")
        a, b, c = (parse_timeout(x, 0, MAX_TIMEOUT) for x in args)
        cmd.timeouts = (a, b, c)
    extra = popt.get_arg()
    if extra is not None:
        raise fail(2, f"unexpected argument {extra}")
    if sched_flags_arg:
        svc.sched_bits = parse_sched_flags(svc.sched_name, sched_flags_arg)
    _generic_opt_check(cmd)
    _process_checks(cmd)
    return cmd


def _atoi(text: str) -> int:
    value, _ = _strtol(text)
    return 0 if value is None else max(-(2**31), min(value, 2**31 - 1))


def _generic_opt_check(cmd: Command) -> None:
    name = CMDNAMES[cmd.cmd - 1]
    _check_rules(cmd, enumerate(COMMANDS_V_OPTIONS[cmd.cmd - 1]), f"'{name}' command")


def _tunnel_opt_check(cmd: Command) -> None:
    i = cmd.dest.tun_type
    rules = zip(TUNOPTS, TUNNEL_TYPES_V_OPTIONS[i], strict=True)
    _check_rules(cmd, rules, f"'{TUNNAMES[i]}' tunnel type")


def _check_rules(cmd: Command, rules: Iterable[tuple[int, str]], what: str) -> None:
    """Apply one row of an options table: '+' required, 'x' illegal, '1' at most one of them."""
    last = 0
    count = 0
    for opt, rule in rules:
        if not cmd.options & (1 << opt):
            if rule == "+":
                raise fail(2, f"You need to supply the '{OPTNAMES[opt]}' option for the {what}")
        else:
            if rule == "x":
                raise fail(2, f"Illegal '{OPTNAMES[opt]}' option with the {what}")
            if rule == "1":
                count += 1
                if count == 1:
                    last = opt
                    continue
                raise fail(
                    2,
                    f"The option '{OPTNAMES[opt]}' conflicts with the '{OPTNAMES[last]}' option "
                    f"in the {what}",
                )


def _process_checks(cmd: Command) -> None:
    svc, dest = cmd.svc, cmd.dest
    if cmd.cmd in (Cmd.ADD, Cmd.EDIT):
        if not svc.fwmark and not svc.port and not svc.persistent:
            raise fail(2, "Zero port specified for non-persistent service")
        if svc.one_packet and not svc.fwmark and svc.protocol != "UDP":
            raise fail(2, "One-Packet Scheduling is only for UDP virtual services")
        if not svc.sched_name:
            svc.sched_name = DEF_SCHED
    if cmd.cmd in (Cmd.ADDDEST, Cmd.EDITDEST):
        if not svc.fwmark and dest.fwd in (FWD_TUNNEL, FWD_ROUTE):
            dest.port = svc.port
        if dest.af != svc.af and dest.fwd != FWD_TUNNEL:
            raise fail(2, "Different address family is allowed only for tunneling servers")
        tun_opts = (1 << Opt.TUN_TYPE) | (1 << Opt.TUN_PORT) | (1 << Opt.TUN_NOCSUM)
        tun_opts |= (1 << Opt.TUN_CSUM) | (1 << Opt.TUN_REMCSUM)
        if cmd.options & tun_opts and dest.fwd != FWD_TUNNEL:
            raise fail(2, "Tunnel options conflict with forward method")
        _tunnel_opt_check(cmd)
    if cmd.cmd is Cmd.LIST:
        listing = (1 << Opt.STATS) | (1 << Opt.RATE) | (1 << Opt.THRESHOLDS)
        special = (1 << Opt.CONNECTION) | (1 << Opt.TIMEOUT) | (1 << Opt.DAEMON)
        td = (1 << Opt.TIMEOUT) | (1 << Opt.DAEMON)
        if (cmd.options & special and cmd.options & listing) or (
            cmd.options & td and cmd.options & (1 << Opt.PERSISTENTCONN)
        ):
            raise fail(2, "options conflicts in the list command")
