"""Shared test set-up: tests marked `privileged` go through the privileged-test gate.

Tests marked `ipvs` need kernel IPVS: they run in the VM tier (`make test-ipvs`, tests/vm/run.sh),
where a kernel without IPVS is a failure; on a host kernel without IPVS they are skipped.
"""

from __future__ import annotations

import pytest

from tests.support import IN_VM, kernel_has_ipvs, need_root


@pytest.fixture
def privileged() -> None:
    """Fixture form of need_root() for tests marked `privileged`."""
    need_root()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ipvs_items = [item for item in items if item.get_closest_marker("ipvs") is not None]
    if ipvs_items and not IN_VM and not kernel_has_ipvs():
        skip = pytest.mark.skip(reason="needs kernel IPVS: runs in the VM tier (make test-ipvs)")
        for item in ipvs_items:
            item.add_marker(skip)
    for item in items:
        names = getattr(item, "fixturenames", None)
        if (
            item.get_closest_marker("privileged") is not None
            and names is not None
            and "privileged" not in names
        ):
            names.insert(0, "privileged")
