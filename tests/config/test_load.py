"""Tests of reading site YAML: the seed verbatim, line numbers, several files, and one-line user errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridlb.config.load import ConfigErrors, did_you_mean, load_site, parse_text, site_from_mapping
from gridlb.errors import ConfigError, Location
from gridlb.table import ServiceKey

DATA = Path(__file__).resolve().parent.parent / "data"
SEED = DATA / "seed-hiera.yaml"
CONFIG = DATA / "config"


def test_seed_is_read_verbatim() -> None:
    site = load_site([SEED])
    inst = site.vrrp_instances["VI_1"]
    assert (inst.interface, str(inst.state), inst.virtual_router_id, inst.priority) == (
        "em1",
        "MASTER",
        1,
        100,
    )
    assert [str(v) for v in inst.virtual_ipaddress] == ["129.93.239.157/26"]
    assert [t.name for t in inst.track_interface] == ["em1"]
    assert str(inst.unicast_source_ip) == "129.93.239.133"
    assert [str(p) for p in inst.unicast_peers] == ["129.93.239.134"]
    vs = site.virtual_servers["red-gridftp-v4"]
    assert vs.service_key() == ServiceKey.tcp("129.93.239.157", 2811)
    assert (vs.scheduler, vs.lb_kind, vs.delay_loop) == ("wlc", "DR", 10.0)
    assert vs.tcp_check is not None and vs.tcp_check.connect_timeout == 3
    assert len(vs.real_servers) == 12
    assert len({rs.real_key(vs) for rs in vs.real_servers}) == 11


def test_line_numbers_and_spelling_of_keys() -> None:
    f = load_site([SEED]).files[0]
    text = SEED.read_text().splitlines()
    loc = f.locate("virtual_servers", "red-gridftp-v4", "real_servers", 4)
    assert loc.file == str(SEED)
    assert "129.93.239.168" in text[loc.line - 1]
    prio = f.locate("vrrp_instances", "VI_1", "priority")
    assert text[prio.line - 1].strip() == "priority: '100'"
    assert f.key("vrrp_instances", "VI_1", "priority") == "keepalived::vrrp_instances.VI_1.priority"
    # a path below what was written resolves to its longest written prefix
    assert f.locate("vrrp_instances", "VI_1", "advert_int") == f.locate("vrrp_instances", "VI_1")


def test_keepalived_aliases_are_accepted_and_located(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text(
        "keepalived::lvs::virtual_servers:\n"
        "  svc:\n"
        "    ip_address: 10.0.0.1\n"
        "    port: 2811\n"
        "    lvs_sched: sed\n"
        "    lvs_method: NAT\n"
        "    real_servers:\n"
        "      - ip_address: 10.0.0.2\n"
        "        MISC_CHECK: {misc_path: /bin/true, nb_get_retry: 4}\n"
        "keepalived::vrrp_instances:\n"
        "  VI:\n"
        "    interface: eth0\n"
        "    virtual_router_id: 7\n"
        "    unicast_src_ip: 10.0.0.10\n"
        "    unicast_peer: [10.0.0.11]\n"
    )
    f = load_site([p]).files[0]
    vs = f.virtual_servers["svc"]
    assert (vs.scheduler, vs.lb_kind) == ("sed", "NAT")
    assert vs.real_servers[0].misc_check is not None and vs.real_servers[0].misc_check.retry == 4
    assert f.locate("virtual_servers", "svc", "lb_algo").line == 5
    assert f.key("virtual_servers", "svc", "lb_algo") == "keepalived::lvs::virtual_servers.svc.lvs_sched"
    inst = f.vrrp_instances["VI"]
    assert str(inst.unicast_source_ip) == "10.0.0.10" and len(inst.unicast_peers) == 1


def test_hiera_yaml11_booleans_are_accepted() -> None:
    f = parse_text(
        "keepalived::vrrp_instances:\n"
        "  VI:\n"
        "    interface: eth0\n"
        "    state: backup\n"
        "    virtual_router_id: 7\n"
        "    nopreempt: yes\n"
        "    dont_track_primary: on\n"
        "keepalived::virtual_servers:\n"
        "  v:\n"
        "    ip_address: 10.0.0.1\n"
        "    port: 1\n"
        "    alpha: 'true'\n"
        "    inhibit_on_failure: no\n",
        "b.yaml",
    )
    inst = f.vrrp_instances["VI"]
    assert inst.nopreempt is True and inst.dont_track_primary is True and str(inst.state) == "BACKUP"
    vs = f.virtual_servers["v"]
    assert vs.alpha is True and vs.inhibit_on_failure is False


def test_other_puppet_classes_are_ignored() -> None:
    f = parse_text("ntp::servers: [a, b]\nprofile::gridftp::port: 2811\n", "h.yaml")
    assert f.vrrp_instances == {} and f.virtual_servers == {}


def test_several_files_keep_origin_and_merge_first_wins() -> None:
    site = load_site([CONFIG / "fixed-lvs1.yaml", CONFIG / "fixed-lvs2.yaml"])
    assert site.directors == ("red-lvs1", "red-lvs2")
    assert [f.vrrp_instances["VI_1"].priority for f in site.files] == [100, 50]
    assert site.vrrp_instances["VI_1"].priority == 100
    assert site.gridlb.dataplane == "auto"  # the default: neither file names one
    assert site.gridlb.director_name == "red-lvs2"  # gridlb: keys layer, the later file wins
    two = site.for_director("red-lvs2")
    assert two.vrrp_instances["VI_1"].priority == 50
    assert two.locate("vrrp_instances", "VI_1", "priority").file.endswith("fixed-lvs2.yaml")
    with pytest.raises(ConfigError, match="red-lvs3"):
        site.for_director("red-lvs3")


def test_site_from_mapping_takes_plain_dicts() -> None:
    site = site_from_mapping(
        {
            "vrrp_instances": {
                "VI": {"interface": "lo", "virtual_router_id": 9, "virtual_ipaddress": ["::1"]}
            },
            "virtual_servers": {"v": {"ip_address": "::1", "port": 2811, "real_servers": [{"ip": "::2"}]}},
        },
        source="import",
    )
    assert site.vrrp_instances["VI"].vrrp_version == 3
    assert str(site.virtual_servers["v"].real_servers[0].real_key(site.virtual_servers["v"])) == "[::2]:2811"
    with pytest.raises(ConfigError) as info:
        site_from_mapping({"vrrp_instances": {"VI": {"interface": "lo"}}}, source="import")
    assert str(info.value).startswith("import: error: vrrp_instances.VI.virtual_router_id")


def test_all_errors_of_a_file_are_collected_in_line_order() -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_text(
            "keepalived::vrrp_instances:\n"
            "  VI:\n"
            "    interface: eth0\n"
            "    virtual_router_id: 0\n"
            "    priorty: 5\n"
            "    advert_int: x\n",
            "m.yaml",
        )
    lines = [e.location.line for e in info.value.errors if e.location]
    assert lines == [4, 5, 6]
    assert str(info.value) == str(info.value.errors[0])


def test_seconds_must_be_finite() -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_text(
            "keepalived::virtual_servers:\n"
            "  VS:\n"
            "    ip_address: 192.0.2.1\n"
            "    port: 2811\n"
            "    delay_loop: .inf\n"
            "    tcp_check: {connect_timeout: .nan}\n",
            "f.yaml",
        )
    found = [(e.location.line if e.location else None, e.message) for e in info.value.errors]
    assert found == [(5, "should be a finite number (got inf)"), (6, "should be a finite number (got nan)")]


@pytest.mark.parametrize(
    "line",
    ["delay_loop: 0", "connect_timeout: 0", "tcp_check: {connect_timeout: 0}", "tcp_check: {delay_loop: 0}"],
)
def test_keepalived_refuses_zero_intervals(line: str) -> None:
    text = (
        "keepalived::virtual_servers:\n  VS:\n    ip_address: 192.0.2.1\n    port: 2811\n    " + line + "\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_text(text, "f.yaml")
    assert info.value.location == Location("f.yaml", 5)
    assert "should be greater than 0" in info.value.message


def test_misc_timeout_is_whole_seconds_as_keepalived_reads_it() -> None:
    text = (
        "keepalived::virtual_servers:\n  VS:\n    ip_address: 192.0.2.1\n    port: 2811\n"
        "    misc_check: {misc_path: /bin/true, misc_timeout: 2.5}\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_text(text, "f.yaml")
    assert info.value.location == Location("f.yaml", 5)
    assert "misc_timeout: should be a valid integer" in str(info.value)
    ok = parse_text(text.replace("2.5", "3.0"), "f.yaml")
    check = ok.virtual_servers["VS"].misc_check
    assert check is not None and check.misc_timeout == 3


def test_vrrp_script_interval_and_timeout_must_be_positive() -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_text("vrrp_scripts:\n  s:\n    script: /bin/true\n    interval: 0\n    timeout: 0\n", "f.yaml")
    assert [e.location.line if e.location else None for e in info.value.errors] == [4, 5]


def test_errors_from_several_files_are_all_reported(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("gridlb: {dataplane: xdp}\n")
    b.write_text("gridlb:\n  control_sockt: /x\n")
    with pytest.raises(ConfigErrors) as info:
        load_site([a, b])
    assert [e.location for e in info.value.errors] == [Location(str(a), 1), Location(str(b), 2)]
    assert "did you mean 'control_socket'" in info.value.errors[1].message


def test_non_utf8_names_the_line(tmp_path: Path) -> None:
    p = tmp_path / "latin1.yaml"
    p.write_bytes(b"gridlb:\n  control_group: 'gr\xfcn'\n")
    with pytest.raises(ConfigError) as info:
        load_site([p])
    assert info.value.location == Location(str(p), 2)


@pytest.mark.parametrize(
    ("word", "pool", "expected"),
    [
        ("priorty", ["priority", "state"], " (did you mean 'priority'?)"),
        ("LB_ALGO", ["lb_algo", "lb_kind"], " (did you mean 'lb_algo'?)"),
        ("zzz", ["priority"], ""),
    ],
)
def test_did_you_mean(word: str, pool: list[str], expected: str) -> None:
    assert did_you_mean(word, pool) == expected
