"""Property test: any YAML gives a Site or a ConfigError (never another exception); lint never crashes."""

from __future__ import annotations

import io
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from gridlb.config.lint import lint_site
from gridlb.config.load import Site, parse_text
from gridlb.errors import ConfigError

KEYS = [
    "interface", "state", "virtual_router_id", "priority", "virtual_ipaddress", "track_interface",
    "unicast_source_ip", "unicast_peers", "ip_address", "port", "lb_algo", "lb_kind", "tcp_check",
    "delay_loop", "real_servers", "weight", "fwmark", "advert_int", "version", "TCP_CHECK", "lvs_sched",
    "connect_timeout", "misc_check", "misc_path", "persistence_timeout", "auth_type", "sorry_server",
]  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 70000),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from(
        ["em1", "MASTER", "BACKUP", "wlc", "DR", "10.0.0.1", "10.0.0.2/24", "fd00::1/64", "yes", "x y"]
    ),
    st.text(max_size=8),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=4),
    ),
    max_leaves=12,
)
ENTRY = st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=8)
DOC = st.fixed_dictionaries(
    {},
    optional={
        "keepalived::vrrp_instances": st.dictionaries(st.sampled_from(["VI_1", "VI_2"]), ENTRY, max_size=2),
        "keepalived::virtual_servers": st.dictionaries(st.sampled_from(["a", "b"]), ENTRY, max_size=2),
        "gridlb": st.dictionaries(
            st.sampled_from(["dataplane", "metrics_listen", "proxy"]), VALUES, max_size=2
        ),
    },
)


def dump(doc: dict[str, Any]) -> str:
    out = io.StringIO()
    YAML(typ="safe", pure=True).dump(doc, out)
    return out.getvalue()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DOC, st.booleans())
def test_any_document_is_a_site_or_a_config_error(doc: dict[str, Any], second: bool) -> None:
    text = dump(doc)
    try:
        files = [parse_text(text, "a.yaml")]
        if second:
            files.append(parse_text(text, "b.yaml"))
    except ConfigError as exc:
        assert "\n" not in str(exc)
        assert str(exc).startswith("a.yaml:") or str(exc).startswith("b.yaml:")
        return
    for finding in lint_site(Site.from_files(files)):
        assert finding.location.file in ("a.yaml", "b.yaml")


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=60))
def test_any_text_is_a_site_or_a_config_error(text: str) -> None:
    try:
        parse_text(text, "t.yaml")
    except ConfigError as exc:
        assert str(exc).startswith("t.yaml:") and "\n" not in str(exc)
