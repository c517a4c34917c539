"""Shared test set-up: tests marked `privileged` go through the privileged-test gate."""

from __future__ import annotations

import pytest

from tests.support import need_root


@pytest.fixture
def privileged() -> None:
    """Fixture form of need_root() for tests marked `privileged`."""
    need_root()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = getattr(item, "fixturenames", None)
        if (
            item.get_closest_marker("privileged") is not None
            and names is not None
            and "privileged" not in names
        ):
            names.insert(0, "privileged")
