"""Runs ipvsadm commands against an in-memory IpvsTable with the kernel's semantics and messages.

`Session.process_options(argv)` is ipvsadm's process_options(): it parses, then lists, saves,
restores or changes the table as the kernel would (services and destinations keyed as IPVS keys
them, destinations added at the head of their service's list, `--set` 0 meaning "unchanged"). A
refused change prints libipvs's ipvs_strerror() text and yields -1 (exit status 255), as ipvsadm
does; option errors end the run with ipvsadm's message and status (IpvsadmExit).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address

from gridlb.ipvsadm import format as fmt_
from gridlb.ipvsadm.model import (
    FWD_BY_NUMBER,
    KERNEL_SCHEDULERS,
    PERSISTENCE_ENGINES,
    flag_names,
    netmask_text,
)
from gridlb.ipvsadm.names import Resolver
from gridlb.ipvsadm.parse import (
    TUN_FLAG_NAMES,
    TUNNAMES,
    Cmd,
    Command,
    HelpRequested,
    IpvsadmExit,
    Opt,
    PoptFailure,
    SvcArgs,
    parse_command,
    tryhelp,
)
from gridlb.ipvsadm.restore import config_stream_lines
from gridlb.table import (
    E_DEST_EXISTS,
    E_NO_DEST,
    E_NO_SERVICE,
    E_SVC_EXISTS,
    AddDest,
    AddService,
    DelDest,
    DelService,
    DestSpec,
    EditDest,
    EditService,
    IpvsTable,
    Op,
    Proto,
    RealKey,
    Service,
    ServiceKey,
    ServiceSpec,
    Stats,
    Timeouts,
    apply_ops,
)

# ipvs_strerror() texts (libipvs.c) and the C library's strerror() for the rest
E_NOT_FOUND = "Scheduler or persistence engine not found"
E_SVC_UNDEFINED = "Service not defined"
E_NO_DAEMON = "No daemon is running"
E_INVAL = "Invalid operation.  Possibly wrong module version, address not unicast, ..."
E_RANGE = "Numerical result out of range"
E_NOTSUP = "Operation not supported"

VERSION = "ipvsadm v1.31 2019/12/24 (compiled with popt and IPVS v1.2.1)\n"
SCHEDULERS_TEXT = "rr|wrr|lc|wlc|lblc|lblcr|dh|sh|sed|nq|fo|ovf|mh"  # ipvsadm 1.31's help text, verbatim


def usage(program: str) -> str:
    """usage_exit()'s text (ipvsadm 1.31)."""
    p = program
    return (
        VERSION + "Usage:\n"
        f"  {p} -A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask] [--pe persistence_engine]"
        " [-b sched-flags]\n"
        f"  {p} -D virtual-service\n"
        f"  {p} -C\n"
        f"  {p} -R\n"
        f"  {p} -S [-n]\n"
        f"  {p} -a|e virtual-service -r server-address [options]\n"
        f"  {p} -d virtual-service -r server-address\n"
        f"  {p} -L|l [virtual-service] [options]\n"
        f"  {p} -Z [virtual-service]\n"
        f"  {p} --set tcp tcpfin udp\n"
        f"  {p} --start-daemon {{master|backup}} [daemon-options]\n"
        f"  {p} --stop-daemon {{master|backup}}\n"
        f"  {p} -h\n\n"
        "Commands:\n"
        "Either long or short options are allowed.\n"
        "  --add-service     -A        add virtual service with options\n"
        "  --edit-service    -E        edit virtual service with options\n"
        "  --delete-service  -D        delete virtual service\n"
        "  --clear           -C        clear the whole table\n"
        "  --restore         -R        restore rules from stdin\n"
        "  --save            -S        save rules to stdout\n"
        "  --add-server      -a        add real server with options\n"
        "  --edit-server     -e        edit real server with options\n"
        "  --delete-server   -d        delete real server\n"
        "  --list            -L|-l     list the table\n"
        "  --zero            -Z        zero counters in a service or all services\n"
        "  --set tcp tcpfin udp        set connection timeout values\n"
        "  --start-daemon              start connection sync daemon\n"
        "  --stop-daemon               stop connection sync daemon\n"
        "  --help            -h        display this help message\n\n"
        "virtual-service:\n"
        "  --tcp-service|-t  service-address   service-address is host[:port]\n"
        "  --udp-service|-u  service-address   service-address is host[:port]\n"
        "  --sctp-service    service-address   service-address is host[:port]\n"
        "  --fwmark-service|-f fwmark          fwmark is an integer greater than zero\n"
        "\n"
        "Options:\n"
        "  --ipv6         -6                   fwmark entry uses IPv6\n"
        f"  --scheduler    -s scheduler         one of {SCHEDULERS_TEXT},\n"
        "                                      the default scheduler is wlc.\n"
        "  --pe            engine              alternate persistence engine may be sip,\n"
        "                                      not set by default.\n"
        "  --persistent   -p [timeout]         persistent service\n"
        "  --netmask      -M netmask           persistent granularity mask\n"
        "  --real-server  -r server-address    server-address is host (and port)\n"
        "  --gatewaying   -g                   gatewaying (direct routing) (default)\n"
        "  --ipip         -i                   ipip encapsulation (tunneling)\n"
        "  --masquerading -m                   masquerading (NAT)\n"
        "  --tun-type      type                one of ipip|gue|gre,\n"
        "                                      the default tunnel type is ipip.\n"
        "  --tun-port      port                tunnel destination port\n"
        "  --tun-nocsum                        tunnel encapsulation without checksum\n"
        "  --tun-csum                          tunnel encapsulation with checksum\n"
        "  --tun-remcsum                       tunnel encapsulation with remote checksum\n"
        "  --weight       -w weight            capacity of real server\n"
        "  --u-threshold  -x uthreshold        upper threshold of connections\n"
        "  --l-threshold  -y lthreshold        lower threshold of connections\n"
        "  --connection   -c                   output of current IPVS connections\n"
        "  --timeout                           output of timeout (tcp tcpfin udp)\n"
        "  --daemon                            output of daemon information\n"
        "  --stats                             output of statistics information\n"
        "  --rate                              output of rate information\n"
        "  --exact                             expand numbers (display exact values)\n"
        "  --thresholds                        output of thresholds information\n"
        "  --persistent-conn                   output of persistent connection info\n"
        "  --tun-info                          output of tunnel information\n"
        "  --nosort                            disable sorting output of service/server entries\n"
        "  --sort                              does nothing, for backwards compatibility\n"
        "  --ops          -o                   one-packet scheduling\n"
        "  --numeric      -n                   numeric output of addresses and ports\n"
        "  --sched-flags  -b flags             scheduler flags (comma-separated)\n"
        "Daemon Options:\n"
        "  --syncid sid                        syncid for connection sync (default=255)\n"
        "  --sync-maxlen length                Max sync message length (default=1472)\n"
        "  --mcast-interface interface         multicast interface for connection sync\n"
        "  --mcast-group address               IPv4/IPv6 group (default=224.0.0.81)\n"
        "  --mcast-port port                   UDP port (default=8848)\n"
        "  --mcast-ttl ttl                     Multicast TTL (default=1)\n"
    )


def service_key(svc: SvcArgs) -> ServiceKey:
    """Return the IPVS key of the service the options name."""
    if svc.fwmark:
        return ServiceKey(Proto.TCP, None, 0, svc.fwmark, 6 if svc.af == 6 else 4)
    return ServiceKey(Proto(svc.protocol or "TCP"), svc.addr, svc.port)


def service_spec(svc: SvcArgs) -> ServiceSpec:
    """Return the ServiceSpec an -A/-E command sets."""
    return ServiceSpec(
        scheduler=svc.sched_name,
        persistence_timeout_s=svc.timeout if svc.persistent else 0,
        netmask=netmask_text(6 if svc.af == 6 else 4, svc.netmask),
        flags=flag_names(svc.sched_name, svc.sched_bits),
        one_packet=svc.one_packet,
        pe_name=svc.pe_name,
    )


def _unicast(addr: IPv4Address | IPv6Address) -> bool:
    if isinstance(addr, IPv4Address):
        return not (addr.is_multicast or int(addr) == 0 or int(addr) == 0xFFFFFFFF)
    return not (addr.is_multicast or addr.is_unspecified or addr.is_link_local)


class Session:
    """One ipvsadm process: a table, a resolver, and the text it prints."""

    def __init__(
        self,
        table: IpvsTable,
        resolver: Resolver,
        *,
        program: str = "ipvsadm",
        read_stdin: Callable[[], str] = lambda: "",
    ) -> None:
        self.table = table
        self.resolver = resolver
        self.program = program
        self.read_stdin = read_stdin
        self.out: list[str] = []
        self.err: list[str] = []
        self.changed = False

    # -- entry points ------------------------------------------------------------------------------

    def run(self, args: list[str]) -> int:
        """main(): list with no arguments, else process_options; returns the exit status (0..255)."""
        try:
            if not args:
                self.out.append(fmt_.list_all(self.table, fmt_.Format(), self.resolver))
                return 0
            return self.process_options([self.program, *args], reading_stdin=False) & 0xFF
        except IpvsadmExit as exc:
            self.out.append(exc.stdout)
            self.err.append(exc.stderr)
            return exc.status & 0xFF

    def process_options(self, argv: list[str], *, reading_stdin: bool) -> int:
        try:
            cmd = parse_command(argv, self.resolver)
        except HelpRequested as req:
            text = usage(argv[0]) if req.what == "h" else VERSION
            raise IpvsadmExit(0, stdout=text) from None
        except PoptFailure as exc:
            self.err.append(exc.message + "\n")
            return -1
        return self._execute(cmd, argv, reading_stdin)

    # -- commands --------------------------------------------------------------------------------

    def _format(self, cmd: Command) -> fmt_.Format:
        return fmt_.Format(
            numeric=cmd.has(Opt.NUMERIC),
            stats=cmd.has(Opt.STATS),
            rate=cmd.has(Opt.RATE),
            thresholds=cmd.has(Opt.THRESHOLDS),
            persistent_conn=cmd.has(Opt.PERSISTENTCONN),
            nosort=cmd.has(Opt.NOSORT),
            exact=cmd.has(Opt.EXACT),
            tun_info=cmd.has(Opt.TUN_INFO),
        )

    def _execute(self, cmd: Command, argv: list[str], reading_stdin: bool) -> int:
        c = cmd.cmd
        if c is Cmd.LIST:
            f = self._format(cmd)
            if cmd.has(Opt.CONNECTION):
                self.out.append(fmt_.list_conn(self.table.connections, f, self.resolver))
            elif cmd.has(Opt.SERVICE):
                svc = self.table.service(service_key(cmd.svc))
                if svc is None:
                    raise IpvsadmExit(1, E_NO_SERVICE + "\n")
                self.out.append(fmt_.list_service(svc, f, self.resolver))
            elif cmd.has(Opt.TIMEOUT):
                self.out.append(fmt_.list_timeout(self.table))
            elif cmd.has(Opt.DAEMON):
                pass  # no sync daemon runs on a table
            else:
                self.out.append(fmt_.list_all(self.table, f, self.resolver))
            return 0
        if c is Cmd.RESTORE:
            return self._restore(argv, reading_stdin)
        if c is Cmd.SAVE:
            self.out.append(fmt_.save(self.table, cmd.numeric, self.resolver))
            return 0
        error = self._change(cmd)
        if error:
            self.err.append(error + "\n")
            return -1
        return 0

    def _restore(self, argv: list[str], reading_stdin: bool) -> int:
        if reading_stdin:
            raise tryhelp(argv[0])
        result = 0
        for line in config_stream_lines(self.read_stdin(), argv[0]):
            if len(line) > 1:
                result = self.process_options(line, reading_stdin=True)
        return result

    def _apply(self, *ops: Op) -> None:
        self.table = apply_ops(self.table, ops)
        self.changed = True

    def _change(self, cmd: Command) -> str:
        """Apply a changing command as the kernel would; return ipvs_strerror() text on refusal."""
        c = cmd.cmd
        t = self.table
        if c is Cmd.FLUSH:
            self.table = replace(t, services=())
            self.changed = True
            return ""
        if c is Cmd.TIMEOUT:
            tcp, fin, udp = cmd.timeouts
            old = t.timeouts
            self.table = replace(t, timeouts=Timeouts(tcp or old.tcp, fin or old.tcpfin, udp or old.udp))
            self.changed = True
            return ""
        if c is Cmd.STARTDAEMON:
            return E_NOTSUP
        if c is Cmd.STOPDAEMON:
            return E_NO_DAEMON
        if c is Cmd.ZERO:
            if not cmd.has(Opt.SERVICE):
                self.table = replace(t, services=tuple(_zeroed(s) for s in t.services))
            else:
                key = service_key(cmd.svc)
                if t.service(key) is None:
                    return E_NO_SERVICE
                self.table = replace(t, services=tuple(_zeroed(s) if s.key == key else s for s in t.services))
            self.changed = True
            return ""
        key = service_key(cmd.svc)
        svc = t.service(key)
        if c in (Cmd.ADD, Cmd.EDIT):
            if c is Cmd.ADD and svc is not None:
                return E_SVC_EXISTS
            if c is Cmd.EDIT and svc is None:
                return E_NO_SERVICE
            spec = service_spec(cmd.svc)
            if spec.scheduler not in KERNEL_SCHEDULERS or (
                spec.pe_name and spec.pe_name not in PERSISTENCE_ENGINES
            ):
                return E_NOT_FOUND
            self._apply(AddService(key, spec) if c is Cmd.ADD else EditService(key, spec))
            return ""
        if c is Cmd.DEL:
            if svc is None:
                return E_NO_SERVICE
            self._apply(*(DelDest(key, d.key) for d in svc.dests), DelService(key))
            return ""
        # destination commands
        if svc is None:
            return E_SVC_UNDEFINED
        d = cmd.dest
        assert d.addr is not None
        rkey = RealKey(d.addr, d.port)
        existing = svc.dest(rkey)
        if c is Cmd.DELDEST:
            if existing is None:
                return E_NO_DEST
            self._apply(DelDest(key, rkey))
            return ""
        if d.l_threshold > d.u_threshold:
            return E_RANGE
        if d.tun_type == 1 and d.tun_port == 0:
            return E_INVAL
        dspec = DestSpec(
            weight=d.weight,
            forward=FWD_BY_NUMBER[d.fwd],
            u_threshold=d.u_threshold,
            l_threshold=d.l_threshold,
            tun_type=TUNNAMES[d.tun_type],
            tun_port=d.tun_port,
            tun_flags=TUN_FLAG_NAMES[d.tun_flags] if d.tun_flags < 3 else "nocsum",
        )
        if c is Cmd.ADDDEST:
            if existing is not None:
                return E_DEST_EXISTS
            if not _unicast(d.addr):
                return E_INVAL
            self._apply(AddDest(key, rkey, dspec))
            return ""
        if existing is None:
            return E_NO_DEST
        self._apply(EditDest(key, rkey, dspec))
        if existing.counters.overloaded and (d.u_threshold == 0 or d.u_threshold > existing.spec.u_threshold):
            svc2 = self.table.service(key)
            assert svc2 is not None
            dests = tuple(
                replace(x, counters=replace(x.counters, overloaded=False)) if x.key == rkey else x
                for x in svc2.dests
            )
            self.table = self.table.with_service(replace(svc2, dests=dests))
        return ""


def _zeroed(svc: Service) -> Service:
    """ip_vs_zero_service(): traffic counters and rates of the service and its destinations to zero."""
    dests = tuple(replace(d, counters=replace(d.counters, stats=Stats())) for d in svc.dests)
    return replace(svc, stats=Stats(), dests=dests)


__all__ = ["Session", "service_key", "service_spec", "usage"]
