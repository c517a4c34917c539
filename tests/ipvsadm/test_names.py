"""Name resolution as ipvsadm does it, without the network."""

from __future__ import annotations

from ipaddress import ip_address

from gridlb.ipvsadm.names import ServicesFile, StaticResolver, addrport_to_anyname


def test_services_file_first_name_wins_and_aliases_resolve() -> None:
    services = ServicesFile.parse("gsiftp 2811/tcp\nhttp 80/tcp www # web\nhttp 80/udp\n")
    r = StaticResolver({}, services)
    assert r.service_by_port(2811, "tcp") == "gsiftp"
    assert r.port_by_service("www", "tcp") == 80
    assert r.service_by_port(2811, "udp") is None


def test_etc_services_names_gsiftp() -> None:
    assert ServicesFile.load().by_port.get((2811, "tcp")) == "gsiftp"


def test_addrport_text_brackets_names_and_the_59_character_buffer() -> None:
    r = StaticResolver({"host.example": ip_address("fd00::5")}, ServicesFile.parse("gsiftp 2811/tcp\n"))
    assert (
        addrport_to_anyname(ip_address("fd00::5"), 2811, "TCP", numeric=False, resolver=r)
        == "[host.example]:gsiftp"
    )
    assert (
        addrport_to_anyname(ip_address("fd00::5"), 2811, "TCP", numeric=True, resolver=r) == "[fd00::5]:2811"
    )
    long6 = ip_address("fd00:1111:2222:3333:4444:5555:6666:7777")
    r2 = StaticResolver({"x" * 70: long6}, ServicesFile())
    assert len(addrport_to_anyname(long6, 1, "TCP", numeric=False, resolver=r2)) == 59
