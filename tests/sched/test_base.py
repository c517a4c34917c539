"""The registry: every kernel scheduler is there, and it is the list the rest of gridlb uses."""

from __future__ import annotations

import pytest

from gridlb.config.schema import SCHEDULERS, VirtualServer
from gridlb.ipvsadm.model import KERNEL_SCHEDULERS
from gridlb.sched import create_scheduler, scheduler_names
from tests.sched import kernel_ref as k
from tests.sched.common import flow, view


def test_registry_has_the_fourteen_kernel_schedulers() -> None:
    assert scheduler_names() == sorted(k.SCHEDULERS)
    assert set(SCHEDULERS) == KERNEL_SCHEDULERS == set(k.SCHEDULERS)


@pytest.mark.parametrize("name", sorted(k.SCHEDULERS))
def test_every_scheduler_is_accepted_by_the_schema_and_picks(name: str) -> None:
    vs = VirtualServer.model_validate({"ip_address": "10.0.0.1", "port": 2811, "lb_algo": name.upper()})
    assert vs.scheduler == name
    s = create_scheduler(name)
    dests = [view(1, weight=2)]
    s.update(dests)
    assert s.pick(dests, flow(), 0.0) == dests[0].key


def test_unknown_scheduler_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(KeyError, match="twos"):
        create_scheduler("fastest")
    with pytest.raises(ValueError, match="'lblc'"):
        VirtualServer.model_validate({"ip_address": "10.0.0.1", "port": 2811, "lb_algo": "fastest"})
