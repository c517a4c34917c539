"""Tests of the keepalived.conf renderer and the director views (derived peer), with real `keepalived -t`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gridlb.config.import_keepalived import import_file, import_text
from gridlb.config.keepalived_conf import Node, parse_text
from gridlb.config.load import Site, load_site, site_from_mapping
from gridlb.config.schema import CHECKER_BLOCKS
from gridlb.errors import ConfigError
from gridlb.render import director_views, peer_priority
from gridlb.render.keepalived import CHECKER_RENDERERS, render_keepalived, render_site
from tests.render.conftest import KeepalivedTest

DATA = Path(__file__).resolve().parents[1] / "data"
SEED = DATA / "seed-hiera.yaml"
CORPUS = sorted((DATA / "keepalived").glob("*.conf"))
SAMPLES = sorted(Path("/usr/share/doc/keepalived/samples").glob("keepalived.conf.*"))


def sections(site: Site) -> list[tuple[Any, ...]]:
    """What a site says, file by file, without where it was read from."""
    return [(f.vrrp_instances, f.virtual_servers, f.vrrp_scripts, f.gridlb, f.keepalived) for f in site.files]


def _top(text: str, keyword: str) -> list[Node]:
    return [n for n in parse_text(text) if n.keyword == keyword]


def _arg(node: Node | None) -> str:
    assert node is not None
    (value,) = node.args
    return value


# ------------------------------------------------------------------------------------------ the seed


def test_seed_renders_both_directors() -> None:
    site = load_site([SEED])
    configs = render_site(site)
    assert list(configs) == ["seed-hiera", "seed-hiera-peer"]
    distinct = {str(rs.ip_address) for rs in site.virtual_servers["red-gridftp-v4"].real_servers}
    assert len(distinct) == 11  # 12 entries in the seed, one listed twice
    for text in configs.values():
        (vs,) = _top(text, "virtual_server")
        assert vs.args == ("129.93.239.157", "2811")
        assert _arg(vs.first("lvs_sched")) == "wlc"
        assert _arg(vs.first("lvs_method")) == "DR"
        assert _arg(vs.first("protocol")) == "TCP"
        assert _arg(vs.first("delay_loop")) == "10"
        servers = vs.find("real_server")
        assert len(servers) == 11
        assert {rs.args for rs in servers} == {(ip, "2811") for ip in distinct}
        for rs in servers:
            (check,) = rs.find("TCP_CHECK")
            assert _arg(check.first("connect_timeout")) == "3"
        (vi,) = _top(text, "vrrp_instance")
        assert vi.first("track_interface") is None
        assert _arg(vi.first("interface")) == "em1"
        vip = vi.first("virtual_ipaddress")
        assert vip is not None and vip.children == (Node("129.93.239.157/26"),)
    own, peer = (_top(t, "vrrp_instance")[0] for t in configs.values())
    assert (_arg(own.first("state")), _arg(own.first("priority"))) == ("MASTER", "100")
    assert (_arg(peer.first("state")), _arg(peer.first("priority"))) == ("BACKUP", "50")
    assert _arg(own.first("unicast_src_ip")) == "129.93.239.133"
    assert _arg(peer.first("unicast_src_ip")) == "129.93.239.134"
    own_peers, peer_peers = own.first("unicast_peer"), peer.first("unicast_peer")
    assert own_peers is not None and own_peers.children == (Node("129.93.239.134"),)
    assert peer_peers is not None and peer_peers.children == (Node("129.93.239.133"),)


def _two_files(tmp_path: Path) -> Site:
    text = SEED.read_text()
    (tmp_path / "red-lvs1.yaml").write_text(text)
    second = (
        text.replace("'129.93.239.133'", "'X'")
        .replace("'129.93.239.134'", "'129.93.239.133'")
        .replace("'X'", "'129.93.239.134'")
        .replace("state: 'MASTER'", "state: 'BACKUP'")
        .replace("priority: '100'", "priority: '90'")
    )
    (tmp_path / "red-lvs2.yaml").write_text(second)
    return load_site([tmp_path / "red-lvs1.yaml", tmp_path / "red-lvs2.yaml"])


def test_two_director_files_are_rendered_as_written(tmp_path: Path) -> None:
    site = _two_files(tmp_path)
    configs = render_site(site)
    assert list(configs) == ["red-lvs1", "red-lvs2"]
    (vi2,) = _top(configs["red-lvs2"], "vrrp_instance")
    assert _arg(vi2.first("priority")) == "90"  # as written, not derived
    assert _arg(vi2.first("unicast_src_ip")) == "129.93.239.134"
    assert render_keepalived(site, "red-lvs2") == configs["red-lvs2"]
    with pytest.raises(ConfigError, match="no director named 'red-lvs1-peer'"):
        render_site(site, director="red-lvs1-peer")


def test_peer_priority_rule() -> None:
    assert [peer_priority(p) for p in (100, 255, 51, 50, 1)] == [50, 205, 1, 1, 1]


def test_peer_needs_a_unicast_source() -> None:
    site = site_from_mapping(
        {
            "keepalived::vrrp_instances": {
                "VI_1": {"interface": "em1", "virtual_router_id": 1, "unicast_peers": ["10.0.0.2"]}
            }
        },
        source="one.yaml",
    )
    with pytest.raises(ConfigError, match="cannot be derived") as info:
        director_views(site)
    assert str(info.value).startswith("one.yaml: error: keepalived::vrrp_instances.VI_1.unicast_peers:")


def test_multicast_peer_drops_source_and_keeps_vips() -> None:
    site = import_file(str(DATA / "keepalived" / "12-multicast-nat-tun.conf")).site()
    own, peer = director_views(site)
    assert own.vrrp_instances["VI_MC"].multicast_source_ip is not None
    inst = peer.vrrp_instances["VI_MC"]
    assert inst.multicast_source_ip is None and inst.priority == 1  # 50 - 50, kept >= 1
    assert inst.virtual_ipaddress == own.vrrp_instances["VI_MC"].virtual_ipaddress


# ------------------------------------------------------------------------------------- round trip


def test_corpus_is_big_enough() -> None:
    assert len(CORPUS) >= 10


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_import_render_import_gives_the_same_site(path: Path) -> None:
    site = import_file(str(path)).site()
    (director,) = site.directors
    text = render_keepalived(site, director)
    again = import_text(text, str(path)).site()
    assert sections(again) == sections(site)
    # and rendering is stable
    assert render_keepalived(again, director) == text


def test_round_trip_notices_a_change() -> None:
    """The comparison above can fail: a changed weight gives a different site."""
    path = DATA / "keepalived" / "05-preempt-delay-notify.conf"
    site = import_file(str(path)).site()
    text = render_keepalived(site, site.directors[0]).replace("weight 2", "weight 3")
    assert sections(import_text(text, str(path)).site()) != sections(site)


GRIDFTP_SITE = {
    "keepalived::virtual_servers": {
        "gridftp": {
            "ip_address": "10.0.0.100",
            "port": 2811,
            "lb_algo": "wlc",
            "lb_kind": "DR",
            "delay_loop": 10,
            "connect_timeout": 4,
            "gridftp_check": {"level": "login", "user": "probe", "retry": 2},
            "real_servers": [
                {"ip_address": "10.0.0.11", "port": 2811},
                {
                    "ip_address": "10.0.0.12",
                    "port": 2811,
                    "GRIDFTP_CHECK": {
                        "connect_timeout": 2,
                        "connect_port": 2812,
                        "bind_if": "lo",
                        "bind_port": 2999,
                    },
                },
            ],
        }
    },
    "gridlb": {"director_name": "gftp"},
}


def test_gridftp_check_renders_as_misc_check_and_imports_back() -> None:
    site = site_from_mapping(GRIDFTP_SITE, source="gftp.yaml")
    text = render_keepalived(site, "gftp")
    (vs,) = _top(text, "virtual_server")
    first, second = vs.find("real_server")
    check = first.first("MISC_CHECK")
    assert check is not None and check.first("misc_dynamic") is not None
    assert _arg(check.first("misc_path")) == (
        "/usr/local/bin/gridlb check gridftp --level login --timeout 4 --user probe --vip 10.0.0.100 "
        "--misc-dynamic-weight 1 10.0.0.11:2811"
    )
    assert _arg(check.first("misc_timeout")) == "12"
    assert "# GridFTP checks run `gridlb check gridftp` (misc_dynamic: exit W+2 up at weight W," in text
    check2 = second.first("MISC_CHECK")
    assert check2 is not None
    assert _arg(check2.first("misc_path")).endswith("--misc-dynamic-weight 1 10.0.0.12:2812")
    assert " --timeout 2 " in _arg(check2.first("misc_path"))
    back = import_text(text, "gftp.conf").site()
    rs1, rs2 = back.virtual_servers["tcp-10.0.0.100-2811"].real_servers
    assert rs1.gridftp_check is not None and rs1.gridftp_check.level == "login"
    assert rs1.gridftp_check.user == "probe" and rs1.gridftp_check.retry == 2
    assert rs1.gridftp_check.connect_timeout is None and rs1.gridftp_check.connect_ip is None
    assert rs2.gridftp_check is not None and rs2.gridftp_check.connect_timeout == 2
    assert rs2.gridftp_check.connect_port == 2812
    assert (rs2.gridftp_check.bind_if, rs2.gridftp_check.bind_port) == ("lo", 2999)  # nothing lost
    # from keepalived.conf on, the round trip is exact
    assert sections(import_text(render_keepalived(back, "gftp"), "gftp.conf").site()) == sections(back)


# ------------------------------------------------------------------------- the real keepalived -t


@pytest.mark.privileged
def test_keepalived_accepts_both_seed_configs(keepalived_netns: KeepalivedTest, tmp_path: Path) -> None:
    for name, text in render_site(load_site([SEED])).items():
        path = tmp_path / f"{name}.conf"
        path.write_text(text)
        assert keepalived_netns.check(path) == (0, "")


@pytest.mark.privileged
def test_keepalived_accepts_a_director_pair(keepalived_netns: KeepalivedTest, tmp_path: Path) -> None:
    configs = render_site(_two_files(tmp_path))
    assert len(configs) == 2
    for name, text in configs.items():
        path = tmp_path / f"{name}.conf"
        path.write_text(text)
        assert keepalived_netns.check(path) == (0, "")


@pytest.mark.privileged
def test_keepalived_rejects_tracking_the_own_interface(
    keepalived_netns: KeepalivedTest, tmp_path: Path
) -> None:
    """The line render leaves out makes `keepalived -t` exit 5: the check above can fail."""
    text = render_site(load_site([SEED]))["seed-hiera"]
    bad = text.replace(
        "    advert_int 1\n", "    advert_int 1\n    track_interface {\n        em1\n    }\n", 1
    )
    assert bad != text
    path = tmp_path / "own-track.conf"
    path.write_text(bad)
    rc, output = keepalived_netns.check(path)
    assert rc == 5
    assert "Ignoring track_interface em1 since own interface" in output


@pytest.mark.privileged
def test_keepalived_needs_the_interfaces(tmp_path: Path, keepalived_netns: KeepalivedTest) -> None:
    text = render_site(load_site([SEED]))["seed-hiera"].replace("interface em1", "interface em9")
    path = tmp_path / "em9.conf"
    path.write_text(text)
    rc, output = keepalived_netns.check(path)
    assert rc == 5 and "em9" in output


@pytest.mark.privileged
@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_keepalived_accepts_corpus_and_its_renders(
    path: Path, keepalived_netns: KeepalivedTest, tmp_path: Path
) -> None:
    assert keepalived_netns.check(path) == (0, "")
    for name, text in render_site(import_file(str(path)).site()).items():
        out = tmp_path / f"{name}.conf"
        out.write_text(text)
        assert keepalived_netns.check(out) == (0, ""), text


@pytest.mark.privileged
def test_keepalived_accepts_a_gridftp_check(keepalived_netns: KeepalivedTest, tmp_path: Path) -> None:
    path = tmp_path / "gftp.conf"
    path.write_text(render_keepalived(site_from_mapping(GRIDFTP_SITE, source="gftp.yaml"), "gftp"))
    assert keepalived_netns.check(path) == (0, "")


# ---------------------------------------------------------------------- keepalived's own samples


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_samples_round_trip(path: Path) -> None:
    """import(render(x)) is x for every sample keepalived 2.2.7 ships, for each director rendered."""
    site = import_file(str(path)).site()
    for text in render_site(site).values():
        again = import_text(text, str(path)).site()
        if again.vrrp_instances == site.vrrp_instances:  # the director itself (not the derived peer)
            assert sections(again) == sections(site)
            assert text in render_site(again).values()  # and rendering is stable


@pytest.mark.privileged
@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_keepalived_accepts_the_samples_renders(
    path: Path, keepalived_netns: KeepalivedTest, tmp_path: Path
) -> None:
    """keepalived -t is clean on every rendering (the samples themselves: 4 of them exit 5)."""
    configs = render_site(import_file(str(path)).site())
    assert configs
    for name, text in configs.items():
        out = tmp_path / f"{name}.conf"
        out.write_text(text)
        assert keepalived_netns.check(out) == (0, ""), text


@pytest.mark.privileged
def test_keepalived_t_can_fail_on_a_sample(keepalived_netns: KeepalivedTest) -> None:
    """The check above can fail: the rules sample as shipped makes keepalived -t exit 5."""
    rc, output = keepalived_netns.check(Path("/usr/share/doc/keepalived/samples/keepalived.conf.vrrp.rules"))
    assert rc == 5 and "invalid IP 192.168.100./24" in output


MULTI_SITE = {
    "keepalived::virtual_servers": {
        "gridftp": {
            "ip_address": "10.0.0.100",
            "port": 2811,
            "lb_kind": "DR",
            "gridftp_check": {"level": "banner"},
            "real_servers": [{"ip_address": "10.0.0.11"}],
        },
        "webdav": {
            "ip_address": "10.0.0.100",
            "port": 443,
            "lb_kind": "DR",
            "virtualhost": "dav.example.org",
            "ssl_get": {
                "url": [{"path": "/store/", "status_code": "200-299 207"}],
                "enable_sni": True,
                "level": "propfind",
                "cert_warn_days": 14,
            },
            "real_servers": [{"ip_address": "10.0.0.11"}, {"ip_address": "10.0.0.12"}],
        },
    },
    "gridlb": {"director_name": "multi"},
}


def test_one_vip_several_protocols_renders_with_what_keepalived_will_not_do() -> None:
    site = site_from_mapping(MULTI_SITE, source="multi.yaml")
    text = render_keepalived(site, "multi")
    servers = _top(text, "virtual_server")
    assert [vs.args for vs in servers] == [("10.0.0.100", "2811"), ("10.0.0.100", "443")]
    ssl = servers[1].find("real_server")[0].first("SSL_GET")
    assert ssl is not None and ssl.first("enable_sni") is not None
    url = ssl.first("url")
    assert url is not None and url.first("status_code") == Node("status_code", ("200-299", "207"))
    assert (
        "# 10.0.0.11: gridlb's ssl_get also checks level, cert_warn_days, tls_verify (certificate checks); "
        "keepalived's checker does not" in text
    )
    back = import_text(text, "multi.conf").site().virtual_servers["tcp-10.0.0.100-443"].real_servers[0]
    assert back.ssl_get is not None and back.ssl_get.tls_verify is False and back.ssl_get.level is None


@pytest.mark.privileged
def test_keepalived_accepts_several_protocols(keepalived_netns: KeepalivedTest, tmp_path: Path) -> None:
    path = tmp_path / "multi.conf"
    path.write_text(render_keepalived(site_from_mapping(MULTI_SITE, source="multi.yaml"), "multi"))
    assert keepalived_netns.check(path) == (0, "")


XROOTD_SITE = {
    "keepalived::virtual_servers": {
        "xrootd": {
            "ip_address": "10.0.0.100",
            "port": 1094,
            "lb_algo": "wlc",
            "lb_kind": "DR",
            "XROOTD_CHECK": {"level": "canary", "canary_path": "/store/canary", "bind_if": "lo"},
            "real_servers": [
                {"ip_address": "10.0.0.11", "port": 1094},
                {
                    "ip_address": "10.0.0.12",
                    "port": 1094,
                    "xrootd_check": {"user": "probe", "check_redirect": False, "bindto": "10.0.0.2"},
                },
            ],
        }
    },
    "gridlb": {"director_name": "xrd"},
}


def test_xrootd_check_renders_as_misc_check_and_imports_back() -> None:
    site = site_from_mapping(XROOTD_SITE, source="xrd.yaml")
    text = render_keepalived(site, "xrd")
    (vs,) = _top(text, "virtual_server")
    first, second = vs.find("real_server")
    check = first.first("MISC_CHECK")
    assert check is not None and check.first("misc_dynamic") is not None
    assert _arg(check.first("misc_path")) == (
        "/usr/local/bin/gridlb check xrootd --level canary --timeout 5 --canary /store/canary --bind-if lo "
        "--vip 10.0.0.100 --misc-dynamic-weight 1 10.0.0.11:1094"
    )
    check2 = second.first("MISC_CHECK")
    assert check2 is not None
    assert _arg(check2.first("misc_path")) == (
        "/usr/local/bin/gridlb check xrootd --timeout 5 --user probe --no-redirect-check --bindto 10.0.0.2 "
        "--vip 10.0.0.100 --misc-dynamic-weight 1 10.0.0.12:1094"
    )
    back = import_text(text, "xrd.conf").site()
    rs1, rs2 = back.virtual_servers["tcp-10.0.0.100-1094"].real_servers
    assert rs1.xrootd_check is not None and rs1.xrootd_check.canary_path == "/store/canary"
    assert rs1.xrootd_check.bind_if == "lo" and rs1.xrootd_check.connect_ip is None
    assert rs2.xrootd_check is not None and rs2.xrootd_check.check_redirect is False
    assert str(rs2.xrootd_check.bindto) == "10.0.0.2" and rs2.xrootd_check.user == "probe"
    assert sections(import_text(render_keepalived(back, "xrd"), "xrd.conf").site()) == sections(back)


@pytest.mark.privileged
def test_keepalived_accepts_an_xrootd_check(keepalived_netns: KeepalivedTest, tmp_path: Path) -> None:
    path = tmp_path / "xrd.conf"
    path.write_text(render_keepalived(site_from_mapping(XROOTD_SITE, source="xrd.yaml"), "xrd"))
    assert keepalived_netns.check(path) == (0, "")


def test_every_checker_block_has_a_renderer_writing_keepalived_s_block() -> None:
    """One entry per site key; each writes the keepalived block of that name (gridlb's run as MISC_CHECK)."""
    assert list(CHECKER_RENDERERS) == [key for key, _model in CHECKER_BLOCKS.values()]
    for keyword, (key, _model) in CHECKER_BLOCKS.items():
        written = CHECKER_RENDERERS[key][0]
        assert written == ("MISC_CHECK" if key in ("gridftp_check", "xrootd_check") else keyword), key
    texts = [t for path in CORPUS for t in render_site(import_file(str(path)).site()).values()]
    written_blocks = {n.keyword for text in texts for n in _walk_nodes(parse_text(text))}
    assert {w for w, _fill in CHECKER_RENDERERS.values()} <= written_blocks


def _walk_nodes(nodes: tuple[Node, ...]) -> list[Node]:
    out = []
    for node in nodes:
        out.append(node)
        out += _walk_nodes(node.children or ())
    return out
