"""Tests that the schema takes its defaults from `gridlb.config.defaults`, and that they are keepalived's."""

from __future__ import annotations

from gridlb.config import defaults as D
from gridlb.config.schema import CheckKind, CheckSpec, GridlbSettings, RealServer, VirtualServer, VrrpInstance
from gridlb.table import RealKey, parse_address


def test_keepalived_defaults() -> None:
    # keepalived.conf(5) and keepalived/include/vrrp.h values
    assert (D.VRRP_PRIORITY, D.VRRP_ADVERT_INT_S, D.VRRP_GARP_MASTER_DELAY_S, D.VRRP_GARP_MASTER_REPEAT) == (
        100,
        1,
        5,
        5,
    )
    assert (D.CHECK_CONNECT_TIMEOUT_S, D.CHECK_RETRY, D.CHECK_DELAY_BEFORE_RETRY_S, D.CHECK_DELAY_LOOP_S) == (
        5,
        1,
        1,
        60,
    )
    assert (D.CHECK_RETRY_MISC, D.VS_LB_KIND, D.VS_QUORUM, D.VS_PERSISTENCE_TIMEOUT_S) == (0, "NAT", 1, 360)


def test_models_use_the_defaults_module() -> None:
    inst = VrrpInstance.model_validate({"interface": "e", "virtual_router_id": 1})
    assert (inst.priority, inst.advert_int, str(inst.state)) == (
        D.VRRP_PRIORITY,
        D.VRRP_ADVERT_INT_S,
        D.VRRP_STATE,
    )
    vs = VirtualServer.model_validate({"ip_address": "192.0.2.1", "port": 1})
    assert (vs.lb_algo, vs.lb_kind, str(vs.protocol)) == (D.VS_SCHEDULER, D.VS_LB_KIND, D.VS_PROTOCOL)
    assert RealServer.model_validate({"ip_address": "192.0.2.2"}).weight == D.RS_WEIGHT
    spec = CheckSpec(kind=CheckKind.TCP, target=RealKey(parse_address("192.0.2.2"), 1))
    assert (spec.connect_timeout_s, spec.delay_loop_s, spec.retry) == (
        D.CHECK_CONNECT_TIMEOUT_S,
        D.CHECK_DELAY_LOOP_S,
        D.CHECK_RETRY,
    )
    g = GridlbSettings()
    assert (g.dataplane, g.control_socket, g.timeouts.tcpfin) == (
        D.GRIDLB_DATAPLANE,
        D.GRIDLB_CONTROL_SOCKET,
        D.TIMEOUT_TCPFIN_S,
    )
