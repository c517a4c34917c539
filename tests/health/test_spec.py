"""From the config's resolved CheckSpec to a checker and a CheckPolicy, and on into the runner."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gridlb.config.lint import lint_site
from gridlb.config.load import ConfigErrors, Site, parse_text
from gridlb.director.director import DirectorConfig
from gridlb.director.health import RunnerMonitor
from gridlb.director.reconcile import HealthKey
from gridlb.errors import ConfigError
from gridlb.health.base import Checker, CheckResult, Verdict
from gridlb.health.gridftp import GridftpChecker
from gridlb.health.runner import HealthRunner
from gridlb.health.script import ScriptChecker
from gridlb.health.spec import from_check_spec, site_check_problems
from gridlb.health.tcp import TcpChecker
from gridlb.health.tracker import CheckPolicy, HealthChanged
from gridlb.health.xrootd import XrootdChecker
from gridlb.table import RealKey, parse_address
from tests.support import need_root

SITE = """
keepalived::virtual_servers:
    gridftp:
        ip_address: '10.201.0.100'
        port: 2811
        lb_algo: wlc
        lb_kind: DR
        delay_loop: 10
        retry: 2
        tcp_check: {connect_timeout: 3}
        real_servers:
            - ip_address: '10.201.0.11'
              port: 2811
            - ip_address: '10.201.0.12'
              port: 2811
              alpha: true
              inhibit_on_failure: true
              gridftp_check: {level: login, bindto: '10.201.0.2', connect_port: 2812}
            - ip_address: '10.201.0.13'
              port: 2811
              MISC_CHECK:
                  misc_path: '/usr/local/bin/check-rs 10.201.0.13'
                  misc_dynamic: true
                  misc_timeout: 7
            - ip_address: '10.201.0.14'
              port: 2811
              gridftp_check: {level: canary, canary_path: /data/canary, delay_before_retry: 4, warmup: 0}
gridlb:
    gridftp_check: {user: ftp, password: lb@site}
"""


def resolved() -> tuple[Site, list[tuple[RealKey, tuple[Checker, CheckPolicy] | None]]]:
    site = Site.from_files([parse_text(SITE, "site.yaml")])
    vs = site.virtual_servers["gridftp"]
    out = []
    for rs in vs.real_servers:
        real = rs.real_key(vs)
        pair = from_check_spec(vs.check_for(rs, site.gridlb), real=real, vips=[parse_address("10.201.0.100")])
        out.append((real, pair))
    return site, out


def test_each_kind_and_the_inherited_timing() -> None:
    _, pairs = resolved()
    (_, tcp), (_, gftp), (_, script), (_, canary) = pairs
    assert isinstance(tcp, tuple) and isinstance(tcp[0], TcpChecker)
    assert tcp[1] == CheckPolicy(delay_loop_s=10, connect_timeout_s=3, retry=2, delay_before_retry_s=1)
    assert tcp[0].options["connect_port"] is None  # checks the real server itself

    assert isinstance(gftp, tuple) and isinstance(gftp[0], GridftpChecker)
    g = gftp[0]
    assert (g.level, g.user, g.password, g.data_address_check) == ("login", "ftp", "lb@site", True)
    assert g.vips == {parse_address("10.201.0.100")}
    assert g.conn.destination(RealKey.parse("10.201.0.12:2811")) == RealKey.parse("10.201.0.12:2812")
    assert str(g.conn.bindto) == "10.201.0.2"
    assert gftp[1].alpha and gftp[1].inhibit_on_failure and gftp[1].retry == 2

    assert isinstance(script, tuple) and isinstance(script[0], ScriptChecker)
    assert script[0].argv == ["/usr/local/bin/check-rs", "10.201.0.13"] and script[0].dynamic
    assert script[1].connect_timeout_s == 7  # misc_timeout bounds a script check

    assert isinstance(canary, tuple) and isinstance(canary[0], GridftpChecker)
    assert (canary[0].level, canary[0].canary_path) == ("canary", "/data/canary")
    assert (canary[1].delay_before_retry_s, canary[1].warmup_s) == (4, 0)


def test_no_check_means_none() -> None:
    text = SITE.replace("        tcp_check: {connect_timeout: 3}\n", "")
    site = Site.from_files([parse_text(text, "site.yaml")])
    vs = site.virtual_servers["gridftp"]
    rs = vs.real_servers[0]
    assert from_check_spec(vs.check_for(rs, site.gridlb), real=rs.real_key(vs)) is None


def test_misc_timeout_zero_is_the_delay_loop_as_in_keepalived() -> None:
    site = Site.from_files([parse_text(SITE.replace("misc_timeout: 7", "misc_timeout: 0"), "site.yaml")])
    vs = site.virtual_servers["gridftp"]
    rs = vs.real_servers[2]
    pair = from_check_spec(vs.check_for(rs, site.gridlb), real=rs.real_key(vs))
    assert pair is not None and pair[1].connect_timeout_s == 10


async def test_reload_through_the_runner_keeps_state() -> None:
    """A reload (sync with freshly resolved specs) keeps each server's state: no flapping."""
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.91", 0)
    port = server.sockets[0].getsockname()[1]
    text = (
        SITE.replace("10.201.0.11", "127.0.0.91")
        .replace(
            "port: 2811\n            - ip_address: '10.201.0.12'",
            f"port: {port}\n            - ip_address: '10.201.0.12'",
        )
        .replace("delay_loop: 10", "delay_loop: 0.05")
        .replace("connect_timeout: 3", "connect_timeout: 1, warmup: 0")
    )
    site = Site.from_files([parse_text(text, "site.yaml")])
    vs = site.virtual_servers["gridftp"]
    rs = vs.real_servers[0]
    real = rs.real_key(vs)
    assert real == RealKey.parse(f"127.0.0.91:{port}")
    pair = from_check_spec(vs.check_for(rs, site.gridlb), real=real)
    assert pair is not None
    queue: asyncio.Queue[HealthChanged] = asyncio.Queue()
    async with HealthRunner(queue) as runner:
        runner.sync({real: pair})
        await asyncio.sleep(0.3)
        assert runner.snapshot(real).state is Verdict.UP and runner.snapshot(real).checks >= 2
        server.close()
        await server.wait_closed()
        event = await asyncio.wait_for(queue.get(), 10)
        assert (event.real, event.new) == (real, Verdict.DOWN)
        # reload: the same site resolved again; the server stays DOWN, no event
        again = from_check_spec(vs.check_for(rs, site.gridlb), real=real)
        assert again is not None
        runner.sync({real: again})
        await asyncio.sleep(0.3)
        assert runner.snapshot(real).state is Verdict.DOWN and queue.empty()


OPTIONS_SITE = """
keepalived::virtual_servers:
    svc:
        ip_address: '127.0.0.100'
        port: {port}
        lb_kind: NAT
        delay_loop: 0.2
        real_servers:
            - ip_address: '127.0.0.31'
              port: {port}
              tcp_check: {{bindto: '127.0.0.32', connect_timeout: 1, warmup: 0}}
            - ip_address: '127.0.0.33'
              port: {port}
              MISC_CHECK: {{misc_path: "sh -c 'echo uid=$(id -u) gid=$(id -g)'", user: nobody, warmup: 0}}
            - ip_address: '127.0.0.34'
              port: {port}
              tcp_check: {{bind_if: glbHnone0, connect_timeout: 1, warmup: 0}}
"""


async def test_site_options_reach_the_checks_through_the_director() -> None:
    """bindto is the source the server sees; MISC_CHECK `user nobody` runs as 65534; bind_if is used."""
    need_root()  # setuid for the script, SO_BINDTODEVICE
    peers: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername")[0])
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.31", 0)
    port = server.sockets[0].getsockname()[1]
    config = DirectorConfig.from_site(
        Site.from_files([parse_text(OPTIONS_SITE.format(port=port), "site.yaml")])
    )
    results: dict[RealKey, CheckResult] = {}

    def report(pair: HealthKey, result: CheckResult, *_: object) -> None:
        results.setdefault(pair[1], result)

    monitor = RunnerMonitor(report)
    try:
        monitor.set_targets(config.checks)
        for _ in range(100):
            if len(results) == 3 and peers:
                break
            await asyncio.sleep(0.05)
    finally:
        await monitor.close()
        server.close()
        await server.wait_closed()
    by_addr = {str(r.addr): res for r, res in results.items()}
    assert by_addr["127.0.0.31"].verdict is Verdict.UP and set(peers) == {"127.0.0.32"}
    assert by_addr["127.0.0.33"].verdict is Verdict.UP
    assert by_addr["127.0.0.33"].reason == "sh: exit 0: uid=65534 gid=65534"
    assert by_addr["127.0.0.34"].verdict is Verdict.DOWN and "No such device" in by_addr["127.0.0.34"].reason


BAD_CHECKS = """
keepalived::virtual_servers:
    svc:
        ip_address: '10.0.0.100'
        port: 2811
        lb_kind: NAT
        real_servers:
            - ip_address: '10.0.0.11'
              MISC_CHECK:
                  misc_path: /bin/true
                  user: glbH-no-such-user
            - ip_address: '10.0.0.12'
              MISC_CHECK:
                  misc_path: {insecure}
            - ip_address: '10.0.0.13'
              MISC_CHECK:
                  misc_path: /nonexistent/glbH-check
            - ip_address: '10.0.0.14'
              MISC_CHECK:
                  misc_path: /bin/true
gridlb:
    script_user: {script_user}
"""


def test_checks_that_cannot_run_are_refused_by_lint_and_at_start(tmp_path: Path) -> None:
    need_root()  # the insecure script must run as root to be refused
    insecure = tmp_path / "open" / "check.sh"
    insecure.parent.mkdir()
    insecure.write_text("#!/bin/sh\nexit 0\n")
    insecure.chmod(0o757)
    text = BAD_CHECKS.format(insecure=insecure, script_user="root")
    site = Site.from_files([parse_text(text, "site.yaml")])
    problems = [str(p) for p in site_check_problems(site)]
    line = {
        n: i + 1
        for i, ln in enumerate(text.splitlines())
        for n in ("glbH-no-such-user", "check.sh", "glbH-check")
        if n in ln
    }
    assert problems == [
        f"site.yaml:{line['glbH-no-such-user']}: error: keepalived::virtual_servers.svc.real_servers[0]"
        ".MISC_CHECK.user: user 'glbH-no-such-user' does not exist on this host",
        f"site.yaml:{line['check.sh']}: error: keepalived::virtual_servers.svc.real_servers[1].MISC_CHECK"
        f".misc_path: {insecure}: runs as root but {insecure} is writable by everyone (keepalived "
        "enable_script_security refuses it; run it as another user or make its path root-only)",
        f"site.yaml:{line['glbH-check']}: error: keepalived::virtual_servers.svc.real_servers[2].MISC_CHECK"
        ".misc_path: /nonexistent/glbH-check: No such file or directory",
    ]
    findings = [f for f in lint_site(site) if f.code == "check-cannot-run"]
    assert [str(f) for f in findings] == problems
    with pytest.raises(ConfigErrors) as exc:
        DirectorConfig.from_site(site)
    assert [str(e) for e in exc.value.errors] == problems
    # the default user comes from gridlb.script_user: an unknown one is reported there
    site = Site.from_files(
        [parse_text(BAD_CHECKS.format(insecure="/bin/true", script_user="glbH-nobody"), "s.yaml")]
    )
    assert any(
        str(p).endswith("gridlb.script_user: user 'glbH-nobody' does not exist on this host")
        for p in site_check_problems(site)
    )


def test_script_user_inheritance() -> None:
    """MISC_CHECK user, else gridlb.script_user when written, else the director's own user."""
    text = BAD_CHECKS.format(insecure="/bin/true", script_user="nobody")
    site = Site.from_files([parse_text(text, "site.yaml")])
    vs = site.virtual_servers["svc"]
    users = [vs.check_for(rs, site.gridlb).script_user for rs in vs.real_servers]
    assert users == ["glbH-no-such-user", "nobody", "nobody", "nobody"]
    site = Site.from_files(
        [parse_text(text.replace("    script_user: nobody\n", "    director_name: a\n"), "site.yaml")]
    )
    vs = site.virtual_servers["svc"]
    assert vs.check_for(vs.real_servers[3], site.gridlb).script_user is None


def test_xrootd_check_from_the_site() -> None:
    text = """
keepalived::virtual_servers:
    xrd:
        ip_address: '10.0.0.100'
        port: 1094
        lb_kind: NAT
        XROOTD_CHECK: {level: login, bindto: '10.0.0.2', connect_port: 1095}
        real_servers:
            - ip_address: '10.0.0.11'
            - ip_address: '10.0.0.12'
              xrootd_check: {level: canary, canary_path: /store/canary, check_redirect: false, user: ops}
gridlb:
    xrootd_check: {user: lbcheck}
"""
    site = Site.from_files([parse_text(text, "site.yaml")])
    vs = site.virtual_servers["xrd"]
    made = [
        from_check_spec(vs.check_for(rs, site.gridlb), real=rs.real_key(vs), vips=["10.0.0.100"])
        for rs in vs.real_servers
    ]
    (a, pa), (b, _) = (m for m in made if m is not None)
    assert isinstance(a, XrootdChecker) and isinstance(b, XrootdChecker)
    assert (a.level, a.user, a.canary_path, a.check_redirect) == ("login", "lbcheck", None, True)
    assert a.vips == {parse_address("10.0.0.100")} and str(a.conn.bindto) == "10.0.0.2"
    assert a.conn.destination(RealKey.parse("10.0.0.11:1094")) == RealKey.parse("10.0.0.11:1095")
    assert (b.level, b.user, b.canary_path, b.check_redirect) == ("canary", "ops", "/store/canary", False)
    assert pa.retry == 1
    with pytest.raises(ConfigError, match="1 to 8 printable bytes"):
        parse_text(text.replace("user: ops", "user: far-too-long"), "site.yaml")


def test_a_second_checker_is_refused_not_ignored() -> None:
    text = """
keepalived::virtual_servers:
    svc:
        ip_address: '10.0.0.100'
        port: 2811
        lb_kind: NAT
        tcp_check: {connect_timeout: 3}
        gridftp_check: {level: login}
        real_servers:
            - ip_address: '10.0.0.11'
            - ip_address: '10.0.0.12'
            - ip_address: '10.0.0.13'
              tcp_check: {}
              XROOTD_CHECK: {}
"""
    site = Site.from_files([parse_text(text, "site.yaml")])
    problems = [str(p) for p in site_check_problems(site)]
    assert problems == [
        "site.yaml:8: error: keepalived::virtual_servers.svc.gridftp_check: a second checker on one real "
        "server: gridlb runs one checker per real server (keepalived would need every one to pass); keep one "
        "(tcp_check is the first)",
        "site.yaml:14: error: keepalived::virtual_servers.svc.real_servers[2].XROOTD_CHECK: a second checker "
        "on one real server: gridlb runs one checker per real server (keepalived would need every one to "
        "pass); keep one (tcp_check is the first)",
    ]
