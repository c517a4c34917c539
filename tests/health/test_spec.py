"""From the config's resolved CheckSpec to a checker and a CheckPolicy, and on into the runner."""

from __future__ import annotations

import asyncio

from gridlb.config.load import Site, parse_text
from gridlb.health.base import Verdict
from gridlb.health.gridftp import GridftpChecker
from gridlb.health.runner import HealthRunner
from gridlb.health.script import ScriptChecker
from gridlb.health.spec import from_check_spec
from gridlb.health.tcp import TcpChecker
from gridlb.health.tracker import CheckPolicy, HealthChanged
from gridlb.table import RealKey, parse_address

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


def resolved() -> tuple[Site, list[tuple[RealKey, object]]]:
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
