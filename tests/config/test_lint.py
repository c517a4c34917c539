"""Tests of the semantic lint: each finding on a small site, and none on a clean one."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gridlb.config.lint import Finding, Severity, lint_site
from gridlb.config.load import Site, load_site, parse_text

DATA = Path(__file__).resolve().parent.parent / "data"
CONFIG = DATA / "config"


def lint(*texts: str) -> list[Finding]:
    return lint_site(Site.from_files([parse_text(t, f"d{i + 1}.yaml") for i, t in enumerate(texts)]))


def codes(findings: list[Finding]) -> list[tuple[str, str, int]]:
    return [(f.code, f.location.file, f.location.line) for f in findings]


def instance(
    *,
    state: str = "BACKUP",
    priority: int = 100,
    src: str = "10.0.0.2",
    peers: str = "[10.0.0.3]",
    vip: str = "10.0.0.100/24",
    extra: str = "",
) -> str:
    return (
        "keepalived::vrrp_instances:\n"
        "  VI_1:\n"
        "    interface: eth0\n"
        f"    state: {state}\n"
        "    virtual_router_id: 1\n"
        f"    priority: {priority}\n"
        f"    virtual_ipaddress: {vip}\n"
        f"    unicast_source_ip: {src}\n"
        f"    unicast_peers: {peers}\n" + extra
    )


def test_seed_reports_duplicate_real_server_with_both_lines_and_own_interface() -> None:
    findings = lint_site(load_site([DATA / "seed-hiera.yaml"]))
    assert codes(findings) == [
        ("track-own-interface", str(DATA / "seed-hiera.yaml"), 12),
        ("duplicate-real-server", str(DATA / "seed-hiera.yaml"), 36),
    ]
    dup = findings[1]
    assert dup.severity is Severity.ERROR
    assert "129.93.239.168:2811" in dup.message and "line 34 and line 36" in dup.message
    assert str(dup).startswith(f"{DATA / 'seed-hiera.yaml'}:36: error: keepalived::virtual_servers.")


def test_nebraska_pair_both_master_at_100() -> None:
    a, b = CONFIG / "nebraska-red-lvs1.yaml", CONFIG / "nebraska-red-lvs2.yaml"
    findings = [f for f in lint_site(load_site([a, b])) if f.code == "two-masters"]
    assert [(f.location.file, f.location.line) for f in findings] == [(str(a), 7), (str(b), 7)]
    assert "both MASTER at priority 100" in findings[0].message
    assert f"{b}:7" in findings[0].message and f"{a}:7" in findings[1].message


def test_fixed_pair_is_clean() -> None:
    assert lint_site(load_site([CONFIG / "fixed-lvs1.yaml", CONFIG / "fixed-lvs2.yaml"])) == []


def test_master_and_backup_or_different_priorities_are_fine() -> None:
    assert lint(instance(state="MASTER"), instance(src="10.0.0.3", peers="[10.0.0.2]")) == []
    assert (
        lint(
            instance(state="MASTER", priority=100),
            instance(state="MASTER", priority=90, src="10.0.0.3", peers="[10.0.0.2]"),
        )
        == []
    )


def test_unicast_peers_not_mutual() -> None:
    findings = lint(instance(), instance(src="10.0.0.3", peers="[10.0.0.4]"))
    assert codes(findings) == [("peers-not-mutual", "d2.yaml", 9)]
    assert "10.0.0.2" in findings[0].message


def test_same_source_and_vrid_and_vip_mismatch_across_files() -> None:
    other = instance(peers="[10.0.0.2]", vip="10.0.0.101/24").replace(
        "virtual_router_id: 1", "virtual_router_id: 2"
    )
    found = {f.code for f in lint(instance(), other)}
    assert {"same-source", "vrid-mismatch", "vip-mismatch", "peer-is-self"} <= found


def test_vip_outside_the_interface_subnet() -> None:
    findings = lint(instance(vip="192.168.5.1/24"))
    assert codes(findings) == [("vip-subnet", "d1.yaml", 7)]
    assert "10.0.0.2" in findings[0].message and "192.168.5.0/24" in findings[0].message
    assert lint(instance(vip="192.168.5.1")) == []  # no prefix: nothing can be inferred
    assert codes(lint(instance(peers="[10.9.0.3]"))) == [("peer-subnet", "d1.yaml", 9)]


def test_vrid_used_twice_on_one_interface() -> None:
    text = instance() + (
        "  VI_2:\n"
        "    interface: eth0\n"
        "    virtual_router_id: 1\n"
        "    virtual_ipaddress: 10.0.0.101/24\n"
        "  VI_3:\n"
        "    interface: eth1\n"
        "    virtual_router_id: 1\n"
        "    virtual_ipaddress: 10.0.0.102/24\n"
        "  VI_6:\n"
        "    interface: eth0\n"
        "    virtual_router_id: 1\n"
        "    virtual_ipaddress: fd00::1/64\n"
    )
    findings = lint(text)
    assert codes(findings) == [("duplicate-vrid", "d1.yaml", 12)]  # other interface / family are fine
    assert "VI_1 (line 5)" in findings[0].message


def test_mixed_families() -> None:
    v6_vip_v4_unicast = instance(vip="2600:900:6:1101::da7a:1055/64")
    found = codes(lint(v6_vip_v4_unicast))
    assert ("mixed-family", "d1.yaml", 8) in found and ("mixed-family", "d1.yaml", 9) in found
    both = instance(vip="[10.0.0.100/24, 'fd00::1/64']")
    assert ("mixed-family", "d1.yaml", 7) in codes(lint(both))
    excluded = instance(extra="    virtual_ipaddress_excluded: ['fd00::1/64']\n")
    assert lint(excluded) == []


def test_tracking_its_own_interface() -> None:
    findings = lint(instance(extra="    track_interface: [eth1, eth0]\n"))
    assert codes(findings) == [("track-own-interface", "d1.yaml", 10)]
    assert findings[0].severity is Severity.WARNING and "exits 5" in findings[0].message


def test_vrrp_version_specific_checks() -> None:
    assert codes(lint(instance(extra="    advert_int: 0.5\n"))) == [("advert-int", "d1.yaml", 10)]
    assert lint(instance(extra="    advert_int: 0.5\n    version: 3\n")) == []
    assert codes(lint(instance(extra="    advert_int: 50\n    version: 3\n"))) == [
        ("advert-int", "d1.yaml", 10)
    ]
    auth3 = instance(extra="    version: 3\n    auth_type: PASS\n    auth_pass: secretsecret\n")
    assert [c for c, _, _ in codes(lint(auth3))] == ["auth-v3", "auth-pass-length"]
    assert [c for c, _, _ in codes(lint(instance(extra="    auth_type: pass\n")))] == ["auth-pass"]


def test_track_script_must_name_a_script_and_nopreempt_needs_backup() -> None:
    text = instance(
        state="MASTER", extra="    track_script: [chk_gridftp, chk_other]\n    nopreempt: true\n"
    ) + ("keepalived::vrrp_scripts:\n  chk_gridftp:\n    script: /usr/bin/true\n")
    assert codes(lint(text)) == [("unknown-script", "d1.yaml", 10), ("nopreempt-master", "d1.yaml", 11)]


SERVICE = (
    "keepalived::virtual_servers:\n"
    "  svc:\n"
    "    ip_address: 10.0.0.100\n"
    "    port: 2811\n"
    "    lb_kind: DR\n"
    "    real_servers:\n"
    "      - ip_address: 10.0.0.11\n"
    "      - ip_address: 10.0.0.12\n"
    "        port: 2812\n"
    "      - ip_address: 10.0.0.11\n"
    "        port: 2811\n"
    "      - ip_address: fd00::12\n"
)


def test_service_checks() -> None:
    found = codes(lint(instance() + SERVICE))
    assert found == [
        ("dr-port", "d1.yaml", 18),
        ("duplicate-real-server", "d1.yaml", 19),
        ("rs-family", "d1.yaml", 21),
    ]


def test_service_address_not_held_and_defined_twice_and_differing_across_files() -> None:
    text = instance() + SERVICE.replace("10.0.0.100", "10.0.0.200").replace(
        "      - ip_address: fd00::12\n", ""
    )
    assert ("vip-not-held", "d1.yaml", 12) in codes(lint(text))
    twice = SERVICE + "  svc2:\n    ip_address: 10.0.0.100\n    port: 2811\n"
    assert ("duplicate-service", "d1.yaml", 13) in codes(lint(twice))
    changed = SERVICE.replace("port: 2812", "port: 2811")
    assert ("service-mismatch", "d2.yaml", 2) in codes(lint(SERVICE, changed))


def test_fractions_keepalived_2_2_7_reads_as_whole_seconds() -> None:
    extra = "    garp_master_delay: 1.5\n    garp_master_refresh: 2\n    garp_lower_prio_delay: 0.5\n"
    scripts = "keepalived::vrrp_scripts:\n  s:\n    script: /bin/true\n    interval: 0.2\n    timeout: 1\n"
    findings = lint(instance(extra=extra) + scripts)
    assert codes(findings) == [
        ("whole-seconds", "d1.yaml", 10),
        ("whole-seconds", "d1.yaml", 12),
        ("whole-seconds", "d1.yaml", 16),
    ]
    assert all(f.severity is Severity.WARNING for f in findings)
    assert findings[0].key == "keepalived::vrrp_instances.VI_1.garp_master_delay"
    assert findings[2].key == "keepalived::vrrp_scripts.s.interval"


def test_what_only_keepalived_does_is_reported() -> None:
    """Checkers gridlb does not run, sync groups, static blocks, VMAC, routes and mail: each a finding."""

    from gridlb.config.import_keepalived import import_file
    from gridlb.config.lint import unsupported_checkers

    corpus = Path(__file__).resolve().parents[1] / "data" / "keepalived" / "16-every-checker.conf"
    site = import_file(str(corpus)).site()
    codes = sorted({f.code for f in lint_site(site)})
    for code in (
        "checker-not-run",
        "keepalived-only",
        "mail-not-sent",
        "routes-not-installed",
        "static-not-installed",
        "sync-group-not-run",
        "vmac-not-supported",
    ):
        assert code in codes
    not_run = [f for f in lint_site(site) if f.code == "checker-not-run"]
    assert any(
        "gridlb does not run file_check (keepalived does); only its http_get decide" in f.message
        for f in not_run
    )
    assert any("smtp_check" in f.message and "counts as up" in f.message for f in not_run)
    listed = {(u.real_server, u.keyword) for u in unsupported_checkers(site)}
    assert ("10.90.0.12:25", "SMTP_CHECK") in listed and ("10.90.0.11:443", "BFD_CHECK") in listed
    assert ("10.90.0.13:53", "UDP_CHECK") in listed and ("10.90.0.13:53", "PING_CHECK") in listed
    assert ("10.90.0.11:80", "FILE_CHECK") in listed and ("10.90.0.13:53", "DNS_CHECK") in listed
    assert not any(k in ("HTTP_GET", "SSL_GET") for _rs, k in listed)


def test_director_says_at_start_which_checkers_it_does_not_run() -> None:
    from gridlb.config.import_keepalived import import_file
    from gridlb.director.config import DirectorConfig

    corpus = Path(__file__).resolve().parents[1] / "data" / "keepalived" / "16-every-checker.conf"
    from gridlb.config.schema import GridlbSettings
    from gridlb.dataplane import base
    from gridlb.table import ForwardMethod, Proto

    class Everything:  # a dataplane that can do whatever the corpus asks, so only the checkers remain
        name = "everything"
        capabilities = base.Capabilities(
            forwarding=frozenset(ForwardMethod),
            schedulers=frozenset({"rr", "wrr", "lc", "wlc", "sh", "dh", "mh", "sed", "nq"}),
            protocols=frozenset(Proto),
            fwmark=True,
            persistence=True,
        )

        def unavailable(self) -> str:
            return ""

        def create(self, settings: GridlbSettings, hooks: base.DataplaneHooks) -> base.Dataplane:
            raise NotImplementedError

    config = DirectorConfig.from_site(import_file(str(corpus)).site(), [str(corpus)])
    config = dataclasses.replace(
        config, settings=config.settings.model_copy(update={"dataplane": "everything"})
    )
    base.register(Everything())
    try:
        _, said = config.check_dataplane()
    finally:
        base.unregister("everything")
    not_run = [line for line in said if "is not run by gridlb" in line]
    assert any("SMTP_CHECK of 10.90.0.12:25" in line and "counts as up" in line for line in not_run), said
    assert len(not_run) >= 6


def test_lvs_sync_daemon_interface_with_a_dataplane_that_does_not_sync_is_a_warning() -> None:
    vs = "keepalived::virtual_servers: {}\n"
    proxy = lint(
        instance(extra="    lvs_sync_daemon_interface: eth0\n") + vs + "gridlb:\n  dataplane: proxy\n"
    )
    assert [(f.code, f.severity) for f in proxy if f.code == "sync-not-run"] == [
        ("sync-not-run", Severity.WARNING)
    ]
    dr = lint(instance(extra="    lvs_sync_daemon_interface: eth0\n") + vs + "gridlb:\n  dataplane: dr\n")
    assert [f for f in dr if f.code == "sync-not-run"] == []


def test_proxy_workers_with_another_dataplane_is_a_warning() -> None:
    vs = "keepalived::virtual_servers: {}\n"
    dr = lint(vs + "gridlb:\n  dataplane: dr\n  proxy:\n    workers: 2\n")
    assert [(f.code, f.severity) for f in dr if f.code == "proxy-setting-unused"] == [
        ("proxy-setting-unused", Severity.WARNING)
    ]
    proxy = lint(vs + "gridlb:\n  dataplane: proxy\n  proxy:\n    workers: auto\n")
    assert [f for f in proxy if f.code == "proxy-setting-unused"] == []
