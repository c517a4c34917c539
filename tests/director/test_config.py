"""The director's view of a site: a service with a GRIDFTP_CHECK is a GridFTP service (421 by default)."""

from __future__ import annotations

from gridlb.config.load import site_from_mapping
from gridlb.config.schema import GridftpService
from gridlb.director.config import DirectorConfig
from gridlb.table import ServiceKey


def test_a_gridftp_checked_service_gets_the_default_421_and_named_ones_keep_theirs() -> None:
    site = site_from_mapping(
        {
            "virtual_servers": {
                "g": {
                    "ip_address": "127.0.0.1",
                    "port": 2811,
                    "gridftp_check": {},
                    "real_servers": [{"ip_address": "127.0.0.2"}],
                },
                "x": {
                    "ip_address": "127.0.0.1",
                    "port": 1094,
                    "tcp_check": {},
                    "real_servers": [{"ip_address": "127.0.0.2"}],
                },
                "named": {
                    "ip_address": "127.0.0.5",
                    "port": 2811,
                    "gridftp_check": {},
                    "real_servers": [{"ip_address": "127.0.0.2"}],
                },
            },
            "gridlb": {"gridftp_services": {"127.0.0.5:2811": {"unavailable_reply": ""}}},
        },
        source="s.yaml",
    )
    settings = DirectorConfig.from_site(site).settings
    assert settings.gridftp_service(ServiceKey.tcp("127.0.0.1", 2811)) == GridftpService()
    assert settings.gridftp_service(ServiceKey.tcp("127.0.0.1", 1094)) is None  # not GridFTP
    named = settings.gridftp_service(ServiceKey.tcp("127.0.0.5", 2811))
    assert named is not None and named.unavailable_reply == ""
