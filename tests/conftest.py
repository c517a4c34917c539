"""Shared test set-up: the privileged-test gate (a skip is a failure when CI requires privileges)."""

from __future__ import annotations

import os
import shutil

import pytest

REQUIRE_PRIVILEGED = os.environ.get("GRIDLB_REQUIRE_PRIVILEGED") == "1"


def need(condition: bool, why: str) -> None:
    """Skip the calling test when `condition` is false, or fail it when CI requires privileged tests."""
    if condition:
        return
    if REQUIRE_PRIVILEGED:
        pytest.fail(f"GRIDLB_REQUIRE_PRIVILEGED=1 but {why}")
    pytest.skip(why)


def need_root() -> None:
    """Require root (network namespaces, raw sockets)."""
    need(os.geteuid() == 0, "this test needs root (network namespaces / raw sockets)")


def need_tool(*names: str) -> None:
    """Require the named programs on PATH (installed by `make test` when root)."""
    for name in names:
        need(shutil.which(name) is not None, f"{name} is not installed (`make test` installs it as root)")


@pytest.fixture
def privileged() -> None:
    """Fixture form of need_root() for tests marked `privileged`."""
    need_root()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("privileged") is not None and "privileged" not in getattr(
            item, "fixturenames", ()
        ):
            item.fixturenames.append("privileged")  # type: ignore[attr-defined]
