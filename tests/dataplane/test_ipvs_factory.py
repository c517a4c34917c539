"""The ipvs dataplane as the registry makes it (no kernel needed): what it takes from the director."""

from __future__ import annotations

from gridlb.config.schema import GridlbSettings
from gridlb.dataplane.base import DataplaneHooks, SyncDaemonSpec
from gridlb.dataplane.ipvs import FACTORY, FULL_DUMP_S, IpvsDataplane


def test_full_dumps_follow_the_directors_resync_period_and_sync_its_instance() -> None:
    sync = SyncDaemonSpec("eth1", 51, "VI_1")
    dp = FACTORY.create(GridlbSettings(), DataplaneHooks(sync_daemon=sync, resync_interval_s=2.5))
    assert isinstance(dp, IpvsDataplane)
    try:
        assert dp.options.full_dump_s == 2.5 and dp.sync == sync
        assert dp.services_dumped == 0  # nothing asked of the kernel yet
    finally:
        dp._executor.shutdown()
    default = FACTORY.create(GridlbSettings(), DataplaneHooks())
    try:
        assert isinstance(default, IpvsDataplane) and default.options.full_dump_s == FULL_DUMP_S == 5.0
    finally:
        default._executor.shutdown()
