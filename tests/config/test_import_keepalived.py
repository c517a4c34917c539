"""Tests of the keepalived.conf importer: the corpus, every supported keyword, and errors with file:line."""

from __future__ import annotations

from ipaddress import ip_address
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridlb.config.check_command import CHECK_COMMANDS
from gridlb.config.import_keepalived import (
    DEPRECATED_KEYWORDS,
    gridftp_check_from_command,
    import_file,
    import_text,
    supported_keywords,
)
from gridlb.config.keepalived_conf import Node, emit, parse_file, parse_text
from gridlb.config.load import ConfigErrors, Site
from gridlb.config.schema import CHECKER_BLOCKS, InitialState
from gridlb.errors import ConfigError
from gridlb.render.keepalived import render_site
from gridlb.table import Proto
from tests.support import need_tool

DATA = Path(__file__).resolve().parents[1] / "data" / "keepalived"
CORPUS = sorted(DATA.glob("*.conf"))
_LIST_BLOCKS = {
    "virtual_ipaddress",
    "virtual_ipaddress_excluded",
    "unicast_peer",
    "track_interface",
    "track_script",
}


def _walk(nodes: tuple[Node, ...], block: str, seen: dict[str, set[str]]) -> None:
    for node in nodes:
        seen.setdefault(block, set()).add(node.keyword)
        if node.children is not None and node.keyword not in _LIST_BLOCKS:
            _walk(node.children, node.keyword, seen)


def test_corpus_exercises_every_supported_keyword() -> None:
    seen: dict[str, set[str]] = {}
    for path in CORPUS:
        _walk(parse_file(str(path)), "", seen)
    supported = supported_keywords()
    both = seen.get("HTTP_GET", set()) | seen.get("SSL_GET", set())  # one keyword set for both
    seen["HTTP_GET"] = seen["SSL_GET"] = both
    shared = supported["TCP_CHECK"]  # one handler set for every checker's connection keywords
    missing = {
        block: sorted(
            keywords
            - seen.get(block, set())
            - DEPRECATED_KEYWORDS.get(block, frozenset())
            - (shared if block.endswith(("_CHECK", "_GET")) and block != "TCP_CHECK" else frozenset())
        )
        for block, keywords in supported.items()
    }
    assert {b: m for b, m in missing.items() if m} == {}
    assert len(CORPUS) >= 10


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_corpus_imports_cleanly(path: Path) -> None:
    imported = import_file(str(path))
    assert imported.warnings == []
    site = imported.site()
    assert len(site.directors) == 1


def _site(name: str) -> Site:
    return import_file(str(DATA / name)).site()


def test_seed_director() -> None:
    site = _site("01-seed-director1.conf")
    assert site.directors == ("red-lvs1",)
    inst = site.vrrp_instances["VI_1"]
    assert inst.interface == "em1" and inst.state is InitialState.MASTER and inst.priority == 100
    assert inst.unicast_source_ip == ip_address("129.93.239.133")
    assert inst.unicast_peers == (ip_address("129.93.239.134"),)
    assert str(inst.virtual_ipaddress[0]) == "129.93.239.157/26" and inst.virtual_ipaddress[0].dev == "em1"
    vs = site.virtual_servers["tcp-129.93.239.157-2811"]
    assert (vs.lb_algo, vs.lb_kind, vs.protocol, vs.delay_loop) == ("wlc", "DR", Proto.TCP, 10)
    assert len(vs.real_servers) == 11
    for rs in vs.real_servers:
        assert rs.tcp_check is not None
        assert (rs.tcp_check.connect_timeout, rs.tcp_check.connect_port) == (3, 2811)


def test_vrrp_keywords() -> None:
    v6 = _site("02-ipv6-vrrp3.conf").vrrp_instances["VI_6"]
    assert v6.version == 3 and v6.advert_int == 0.5  # global vrrp_version 3
    auth = _site("04-auth-nopreempt.conf").vrrp_instances["VI_AUTH"]
    assert (auth.auth_type, auth.auth_pass, auth.nopreempt, auth.advert_int) == ("PASS", "s3cr3t", True, 3)
    notify = _site("05-preempt-delay-notify.conf").vrrp_instances["VI_N"]
    assert notify.preempt_delay == 30 and notify.notify_master == "/usr/local/bin/lvs-notify master VI_N"
    assert notify.notify == "/usr/local/bin/lvs-notify-all" and len(notify.unicast_peers) == 2
    tracked = _site("06-track-script.conf")
    inst = tracked.vrrp_instances["VI_T"]
    assert [(t.name, t.weight) for t in inst.track_interface] == [("eth1", -50)]
    assert [(t.name, t.weight) for t in inst.track_script] == [("chk_gridftp", None), ("chk_disk", 5)]
    script = tracked.vrrp_scripts["chk_gridftp"]
    assert (script.interval, script.timeout, script.weight, script.rise, script.fall) == (2, 5, -30, 2, 3)
    excl = _site("14-excluded-garp-sync.conf")
    vi1 = excl.vrrp_instances["VI_1"]
    assert str(vi1.virtual_ipaddress_excluded[0]) == "2600:900:6:1101::da7a:1055/64"
    assert vi1.lvs_sync_daemon_interface == "em1" and vi1.garp_master_refresh == 60
    assert vi1.virtual_ipaddress[0].label == "em1:vip"
    assert excl.vrrp_scripts["chk_local"].init_fail and excl.vrrp_instances["VI_6"].native_ipv6
    assert excl.gridlb.script_user == "root"


def test_lvs_keywords() -> None:
    vs = _site("07-inhibit-persistence.conf").virtual_servers
    gridftp = vs["tcp-10.50.0.100-2811"]
    assert gridftp.inhibit_on_failure and gridftp.persistence_timeout == 600
    assert gridftp.persistence_granularity == "255.255.255.0"
    assert vs["udp-10.50.0.100-53"].protocol is Proto.UDP
    q = _site("08-quorum-sorry.conf").virtual_servers["tcp-10.60.0.100-2811"]
    assert (q.quorum, q.hysteresis, q.quorum_up) == (3, 1, "/usr/local/bin/quorum up")
    assert q.sorry_server is not None and q.sorry_server.port == 2811
    misc = _site("09-misc-check-dynamic.conf").virtual_servers["tcp-10.70.0.100-2811"].real_servers[0]
    assert misc.misc_check is not None and misc.misc_check.misc_dynamic and misc.misc_check.retry == 2
    fw = _site("10-fwmark.conf").virtual_servers["fwmark-10"]
    assert fw.fwmark == 10 and fw.ip_address is None and fw.real_servers[0].port is None
    alpha = _site("11-thresholds-alpha.conf").virtual_servers["tcp-10.90.0.100-2811"]
    assert alpha.alpha and alpha.omega and alpha.lb_algo == "sed" and alpha.retry == 3
    assert alpha.real_servers[0].uthreshold == 500 and alpha.real_servers[2].weight == 0
    inc = _site("13-include.conf").virtual_servers["tcp-10.100.0.100-2811"]
    assert [rs.weight for rs in inc.real_servers] == [1, 2]
    flags = _site("15-scheduler-flags-overrides.conf").virtual_servers
    sh = flags["tcp-10.110.0.100-3128"]
    assert sh.sh_port and sh.sh_fallback and sh.ha_suspend and sh.warmup == 5
    tcp = sh.real_servers[0].tcp_check
    assert tcp is not None and tcp.alpha is False and tcp.bind_port == 40000 and tcp.connect_port == 3129
    assert flags["udp-10.110.0.100-5060"].ops
    assert flags["fwmark-20"].persistence_timeout == 360 and flags["fwmark-20"].ip_family == "inet6"


def test_old_spellings() -> None:
    imported = import_text(
        "vrrp_instance VI {\n interface em1\n virtual_router_id 9\n lvs_sync_daemon_interface em1\n}\n"
        "virtual_server 10.0.0.1 80 {\n lb_algo rr\n lb_kind NAT\n"
        " real_server 10.0.0.2 80 {\n  TCP_CHECK {\n   nb_get_retry 4\n  }\n }\n}\n",
        "old.conf",
    )
    site = imported.site()
    assert site.vrrp_instances["VI"].lvs_sync_daemon_interface == "em1"
    rs = site.virtual_servers["tcp-10.0.0.1-80"].real_servers[0]
    assert rs.tcp_check is not None and rs.tcp_check.retry == 4


def test_warnings_for_what_the_site_does_not_keep() -> None:
    imported = import_text(
        "global_defs {\n notification_email {\n  ops@example.org\n }\n router_id x\n}\n"
        "vrrp_instance VI {\n interface em1\n virtual_router_id 9\n priority 10\n priority 20\n}\n",
        "w.conf",
    )
    assert [str(w) for w in imported.warnings] == [
        "w.conf:11: warning: priority: given twice; the last one wins, as in keepalived",
    ]
    assert imported.mapping["keepalived::global_defs"] == {"notification_email": ["ops@example.org"]}
    assert imported.site().vrrp_instances["VI"].priority == 20


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("vrrp_instance VI {\n interface em1\n priorty 100\n}\n", "e.conf:3: error: priorty: unknown or "),
        (
            "vrrp_instance VI {\n interface em1\n virtual_router_id 1\n priority 300\n}\n",
            "e.conf:4: error: priority:",
        ),
        (
            "vrrp_instance VI {\n interface em1\n virtual_router_id x\n}\n",
            "e.conf:3: error: virtual_router_id:",
        ),
        ("vrrp_instance VI {\n interface em1\n}\n", "e.conf:1: error: virtual_router_id: required"),
        ("virtual_server group G {\n}\n", "e.conf:1: error: virtual_server: no virtual_server_group named G"),
        (  # a nameless group beside a named one that no virtual_server uses (found by the fuzz test)
            "virtual_server_group\nvirtual_server_group 1 {\n}\n",
            "e.conf:1: error: virtual_server_group: expects `virtual_server_group NAME { ... }`",
        ),
        ("vrrp_sync_groop G {\n}\n", "did you mean 'vrrp_sync_group'?"),
        ("vrrp_instanse VI {\n}\n", "did you mean 'vrrp_instance'?"),
        (
            "vrrp_instance VI {\n interface em1\n virtual_router_id 1\n notify_master /bin/n root\n}\n",
            "e.conf:4: error: notify_master: a user/group after the script",
        ),
        (
            "virtual_server 1.2.3.4 80 {\n real_server 1.2.3.5 80 {\n"
            "  TCP_CHECK {\n  }\n  TCP_CHECK {\n  }\n }\n}\n",
            "e.conf:5: error: TCP_CHECK: only one TCP_CHECK per real server",
        ),
        (
            "virtual_server 1.2.3.4 80 {\n real_server 1.2.3.5 80 {\n  weight -1\n }\n}\n",
            "e.conf:3: error: weight:",
        ),
        ("virtual_server 1.2.3.4 80 {\n lvs_sched fastest\n}\n", "e.conf:2: error: lb_algo:"),
        (
            "virtual_server 1.2.3.4 80 {\n lvs_method TUN type gue port 6080\n}\n",
            "e.conf:2: error: lvs_method:",
        ),
        ("vrrp_instance VI {\n unicast_peer {\n  10.0.0.2 min_ttl 3\n }\n}\n", "e.conf:3: error: 10.0.0.2:"),
        (
            "global_defs {\n lvs_sync_daemon em1 VI_9\n}\n",
            "e.conf:2: error: lvs_sync_daemon: no vrrp_instance",
        ),
        (
            "vrrp_instance VI {\n interface em1\n virtual_router_id 1\n nopreempt maybe\n}\n",
            "e.conf:4: error:",
        ),
    ],
)
def test_errors_name_file_line_and_keyword(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        import_text(text, "e.conf").site()
    errors = info.value.errors if isinstance(info.value, ConfigErrors) else (info.value,)
    assert any(expected in str(e) for e in errors), [str(e) for e in errors]
    assert all(str(e).startswith("e.conf:") for e in errors)


def test_every_problem_in_one_run() -> None:
    """Reading, importing and validating problems are all reported together, each as file:line."""
    text = (
        "vrrp_instance VI {\n"  # 1
        " interface em1\n"
        " priorty 100\n"  # 3: unknown keyword
        " virtual_router_id 300\n"  # 4: out of range
        "}\n"
        "virtual_server 10.0.0.1 80 {\n"
        " lvs_sched fastest\n"  # 7: bad scheduler
        " real_server 10.0.0.2 80 {\n"
        "  HTTP_GET {\n"
        "   url {\n"
        "    path /\n"
        "    digest xyz\n"  # 12: not an MD5
        "   }\n"
        "  }\n"
        " }\n"
        "}\n"
        "bogus_block {\n"  # 17: unknown top-level block
        "}\n"
        'x "open\n'  # 19: unterminated quote
    )
    with pytest.raises(ConfigErrors) as info:
        import_text(text, "many.conf").site()
    lines = [str(e).split(": error: ")[0] for e in info.value.errors]
    assert lines == [f"many.conf:{n}" for n in (3, 4, 7, 12, 17, 19)], [str(e) for e in info.value.errors]


def test_conditionals_follow_the_config_id() -> None:
    text = (
        "@d1 $PRIO=150\n@d2 $PRIO=100\n"
        "vrrp_instance VI {\n interface em1\n virtual_router_id 1\n priority $PRIO\n"
        " @d1 state MASTER\n @^d1 state BACKUP\n}\n"
    )
    one = import_text(text, "c.conf", config_id="d1").site().vrrp_instances["VI"]
    two = import_text(text, "c.conf", config_id="d2").site().vrrp_instances["VI"]
    assert (one.priority, one.state, two.priority, two.state) == (
        150,
        InitialState.MASTER,
        100,
        InitialState.BACKUP,
    )


SAMPLES = sorted(Path("/usr/share/doc/keepalived/samples").glob("keepalived.conf.*"))


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_keepalived_samples_import(path: Path) -> None:
    """Every sample keepalived 2.2.7 ships imports (what keepalived itself ignores is a warning)."""
    site = import_file(str(path)).site()
    assert site.virtual_servers or site.vrrp_instances


def test_there_are_25_samples() -> None:
    need_tool("keepalived")
    assert len(SAMPLES) == 25


def test_samples_read_as_keepalived_reads_them() -> None:
    base = Path("/usr/share/doc/keepalived/samples/keepalived.conf.")
    need_tool("keepalived")
    vsg = import_file(f"{base}virtual_server_group").site()
    assert sorted(vsg.virtual_servers) == sorted(
        ["tcp-10.0.0.1-8080", "tcp-10.0.0.2-80", "tcp-192.168.200.1-1358", "fwmark-1", "fwmark-2"]
        + [f"tcp-192.168.200.{n}-80" for n in range(3, 11)]
    )
    rs = vsg.virtual_servers["tcp-10.0.0.1-8080"].real_servers[0]
    assert rs.http_get is not None and rs.http_get.url[0].digest == "640205b7b0fc66c1ea91c463fac6334d"
    syncd = import_file(f"{base}vrrp.lvs_syncd")
    assert "keepalived::vrrp_sync_groups" not in syncd.mapping  # bare names: keepalived drops the group
    assert any("VI_2: unknown keyword in vrrp_sync_group" in str(w) for w in syncd.warnings)
    sync = import_file(f"{base}vrrp.sync").site()
    assert sync.keepalived.vrrp_sync_groups["G2"].group == ("VI_3", "VI_4")
    codes = import_file(f"{base}status_code").site()
    ssl_get = codes.virtual_servers["tcp-192.168.200.100-443"].real_servers[0].ssl_get
    assert ssl_get is not None
    (url1, url2) = ssl_get.url
    assert url1.status_code == ("200-299", "400-499", "503", "505") and url1.accepts(404)
    assert not url1.accepts(502) and url2.accepts(200) and not url2.accepts(201)
    rules = import_file(f"{base}vrrp.rules").site()
    assert rules.keepalived.static_rules == ("from 192.168.100.0/24 table 1 preference 16384",)
    ssl = import_file(f"{base}SSL_GET").site()
    assert ssl.vrrp_instances["VI_1"].state is InitialState.BACKUP  # AH clears MASTER, as keepalived


def test_gridftp_command_parsing() -> None:
    assert gridftp_check_from_command(
        "/usr/local/bin/gridlb check gridftp --level canary --canary /store/x --no-data-address-check "
        "--vip 10.0.0.100 --misc-dynamic-weight 5 10.0.0.1:2811"
    ) == {
        "connect_ip": "10.0.0.1",
        "connect_port": 2811,
        "level": "canary",
        "canary_path": "/store/x",
        "check_data_address": False,
    }
    assert gridftp_check_from_command("gridlb check gridftp --timeout 2.5 [fd00::1]:2812") == {
        "connect_ip": "fd00::1",
        "connect_port": 2812,
        "connect_timeout": 2.5,
    }
    assert gridftp_check_from_command("gridlb check gridftp 10.0.0.1") == {
        "connect_ip": "10.0.0.1",
        "connect_port": 2811,
    }
    assert gridftp_check_from_command("/usr/bin/gridlb check tcp 10.0.0.1:2811") is None
    assert gridftp_check_from_command("/usr/local/bin/check gridftp a b c") is None
    assert gridftp_check_from_command("gridlb check gridftp --frobnicate 10.0.0.1:2811") is None
    assert gridftp_check_from_command("gridlb check gridftp --level login") is None
    assert gridftp_check_from_command("gridlb check gridftp a:1 b:2") is None
    assert gridftp_check_from_command("gridlb 'unbalanced") is None


def test_every_keepalived_checker_is_read_in_a_real_server() -> None:
    """Each checker keepalived knows (gridlb's own are MISC_CHECKs) is a real_server keyword with a
    keyword set of its own, and comes back under its site key."""
    keywords = supported_keywords()
    checkers = {kw: key for kw, (key, _m) in CHECKER_BLOCKS.items() if key not in CHECK_COMMANDS}
    assert set(checkers) <= keywords["real_server"] & set(keywords)
    bodies = {
        "MISC_CHECK": "misc_path /bin/true",
        "HTTP_GET": "url { path /x }",
        "SSL_GET": "url { path /x }",
        "FILE_CHECK": "track_file f",
        "BFD_CHECK": "name b",
    }
    for keyword, key in checkers.items():
        text = (
            "virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n"
            f"  {keyword} {{\n   {bodies.get(keyword, 'connect_timeout 3')}\n  }}\n }}\n}}\n"
        )
        imported = import_text(text, "one.conf")
        assert imported.errors == [], keyword
        (server,) = imported.mapping["keepalived::virtual_servers"].values()
        assert list(server["real_servers"][0]) == ["ip_address", "port", key], keyword


_KEYWORDS = supported_keywords()
_LINE_BLOCKS = {
    "virtual_ipaddress",
    "virtual_ipaddress_excluded",
    "unicast_peer",
    "track_interface",
    "track_script",
}
_ARGS = st.sampled_from(
    [
        "1",
        "0",
        "-5",
        "2.5",
        "300",
        "x",
        "10.0.0.1",
        "fd00::1",
        "10.0.0.1/24",
        "dev",
        "em1",
        "weight",
        "on",
        "fwmark",
        "group",
        "TCP",
        "DR",
        "wlc",
        "gridlb check gridftp 10.0.0.1:2811",
        "",
        "VI_1",
        "s",
    ]
)


@st.composite
def _configs(draw: st.DrawFn, block: str = "", depth: int = 0) -> tuple[Node, ...]:
    """Random statements of `block`, mostly made of the keywords the importer knows there."""
    vocab = sorted(_KEYWORDS.get(block, frozenset())) or ["10.0.0.2", "eth1 weight 5", "chk"]
    nodes = []
    for _ in range(draw(st.integers(0, 5))):
        keyword = draw(st.sampled_from(vocab) | st.sampled_from(["bogus", "real_server", "TCP_CHECK"]))
        args = tuple(draw(st.lists(_ARGS, max_size=3)))
        opens = keyword in _KEYWORDS or keyword in _LINE_BLOCKS or keyword == "real_server"
        children = None
        if depth < 4 and (opens or draw(st.integers(0, 9)) == 0) and draw(st.integers(0, 9)) > 0:
            children = draw(_configs(keyword, depth + 1))
        nodes.append(Node(keyword, args, children))
    return tuple(nodes)


@settings(max_examples=150, deadline=None)
@given(_configs())
def test_any_config_imports_or_gives_one_config_error(nodes: tuple[Node, ...]) -> None:
    """Random keepalived.conf made of the supported keywords: a site, or a ConfigError with file:line."""
    text = emit(nodes)
    try:
        import_text(text, "fuzz.conf").site()
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.conf")


def _mutate(nodes: tuple[Node, ...], path: list[int], change: str, arg: str) -> tuple[Node, ...]:
    """The tree with one statement (found by walking `path` modulo each level's size) changed."""
    if not nodes:
        return nodes
    i = path[0] % len(nodes)
    node = nodes[i]
    if len(path) > 1 and node.children:
        node = Node(node.keyword, node.args, _mutate(node.children, path[1:], change, arg))
        return (*nodes[:i], node, *nodes[i + 1 :])
    if change == "drop":
        return (*nodes[:i], *nodes[i + 1 :])
    if change == "twice":
        return (*nodes[: i + 1], node, *nodes[i + 1 :])
    if change == "args":
        return (*nodes[:i], Node(node.keyword, (arg,), node.children), *nodes[i + 1 :])
    if change == "noargs":
        return (*nodes[:i], Node(node.keyword, (), node.children), *nodes[i + 1 :])
    return (
        *nodes[:i],
        Node(node.keyword, node.args, None if node.children is not None else ()),
        *nodes[i + 1 :],
    )


_CORPUS_TREES = [parse_file(str(p)) for p in CORPUS]


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(range(len(_CORPUS_TREES))),
    st.lists(st.integers(0, 50), min_size=1, max_size=4),
    st.sampled_from(["drop", "twice", "args", "noargs", "block"]),
    _ARGS,
)
def test_mutated_corpus_imports_or_gives_one_config_error(
    index: int, path: list[int], change: str, arg: str
) -> None:
    """One change to a valid corpus file: a site (which renders), or a ConfigError naming the file."""
    text = emit(_mutate(_CORPUS_TREES[index], path, change, arg))
    try:
        site = import_text(text, "fuzz.conf").site()
        configs = render_site(site)
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.conf")
        return
    for view_text in configs.values():
        parse_text(view_text)


def test_lvs_sync_daemon_id_round_trips() -> None:
    """`lvs_sync_daemon IF INSTANCE id N` imports as the instance's interface and id, and renders back."""
    imported = import_text(
        "global_defs {\n lvs_sync_daemon em2 VI id 42\n}\n"
        "vrrp_instance VI {\n interface em1\n virtual_router_id 9\n}\n",
        "sync.conf",
    )
    site = imported.site()
    inst = site.vrrp_instances["VI"]
    assert (inst.lvs_sync_daemon_interface, inst.lvs_sync_daemon_id) == ("em2", 42)
    assert any("lvs_sync_daemon em2 VI id 42\n" in text for text in render_site(site).values())
    with pytest.raises(ConfigError) as info:
        import_text(
            "global_defs {\n lvs_sync_daemon em2 VI id 300\n}\nvrrp_instance VI {\n}\n", "bad.conf"
        ).site()
    errors = info.value.errors if isinstance(info.value, ConfigErrors) else (info.value,)
    assert any("bad.conf:2: error: lvs_sync_daemon:" in str(e) and "id 0..255" in str(e) for e in errors)
